"""eval/report.py arithmetic on hand-made curves, and eval/compare.py end to end: synthetic run
directories, a real growing Trainer run, and the wandb public-API path through a stub of the two
calls it makes (`Api().runs`, `Run.scan_history`)."""

import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from eval.compare import compare, drop_superseded, load_run, load_wandb_runs, seed_spread_rows
from eval.report import exceeds_paired_noise, exceeds_seed_spread, paired_difference, first_reach, loss_jump, mean_curve, pooled_std, run_result, spread, value_at

REPO = Path(__file__).resolve().parent.parent
XS, YS = [0.0, 10.0, 20.0, 30.0], [4.0, 3.0, 2.0, 1.5]


def test_first_reach_interpolates_linearly_in_x():
    # Between (10, 3) and (20, 2): 2.5 is half way.
    assert first_reach(XS, YS, 2.5) == 15.0
    # Between (20, 2) and (30, 1.5): 1.9 is 1/5 of the way.
    assert first_reach(XS, YS, 1.9) == pytest.approx(22.0, abs=1e-12)
    assert first_reach(XS, YS, 1.5) == 30.0  # reached exactly at the last point
    assert first_reach(XS, YS, 3.0) == 10.0
    assert first_reach(XS, YS, 5.0) == 0.0  # already below at the first eval


def test_first_reach_not_reached_is_none():
    assert first_reach(XS, YS, 1.4999) is None
    assert first_reach([], [], 1.0) is None


def test_first_reach_takes_first_crossing_of_a_non_monotone_curve():
    # Dips to 2 at x=10, back up to 3 (a growth jump), down to 1 at x=30.
    assert first_reach([0, 10, 20, 30], [4, 2, 3, 1], 2.5) == 7.5


def test_value_at_interpolates_and_never_extrapolates():
    assert value_at(XS, YS, 25.0) == 1.75
    assert value_at(XS, YS, 10.0) == 3.0
    assert value_at(XS, YS, 0.0) == 4.0
    assert value_at(XS, YS, 30.0) == 1.5
    assert value_at(XS, YS, 30.5) is None
    assert value_at(XS, YS, -1.0) is None


def test_curves_must_have_nondecreasing_x():
    with pytest.raises(ValueError, match=r"x\[1\]=10 > x\[2\]=5"):
        first_reach([0, 10, 5], [3, 2, 1], 1.5)
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        value_at([0, 1, 2], [1, 2], 1)


def test_spread_and_seed_spread_criterion():
    s = spread([1.0, 2.0, 3.0])
    assert (s.n, s.missing, s.mean, s.std, s.min, s.max) == (3, 0, 2.0, 1.0, 1.0, 3.0)
    s = spread([2.5, None])
    assert (s.n, s.missing, s.mean, s.std) == (1, 1, 2.5, 0.0)
    assert spread([None]).mean is None
    # Each group has sample std sqrt(0.02) = 0.1414..., so 2 * pooled std = 0.2828...
    assert pooled_std([1.0, 1.2], [1.5, 1.7]) == pytest.approx(math.sqrt(0.02))
    assert exceeds_seed_spread([1.0, 1.2], [1.5, 1.7]) is True  # |diff| 0.5
    assert exceeds_seed_spread([1.0, 1.2], [1.2, 1.4]) is False  # |diff| 0.2
    assert exceeds_seed_spread([1.0], [1.5, 1.7]) is None


def test_mean_curve_over_the_overlap_of_seeds():
    grid, mean, std, lo, hi = mean_curve([([0, 10, 20], [4, 2, 1]), ([5, 15, 25], [3, 2, 1])])
    assert grid == [5, 10, 15, 20]
    # Curve 1 at the grid: 3, 2, 1.5, 1; curve 2: 3, 2.5, 2, 1.5.
    assert mean == [3.0, 2.25, 1.75, 1.25]
    assert lo == [3.0, 2.0, 1.5, 1.0]
    assert hi == [3.0, 2.5, 2.0, 1.5]
    assert std[0] == 0.0 and std[1] == pytest.approx(math.sqrt(0.125))
    assert mean_curve([([0, 1], [2, 1]), ([2, 3], [2, 1])]) == ([], [], [], [], [])


def test_loss_jump_uses_last_log_at_or_before_and_first_after():
    j = loss_jump([8, 9, 10, 11, 12], [3.0, 2.9, 2.8, 3.4, 3.2], 10)
    assert (j.before, j.after, j.before_step, j.after_step) == (2.8, 3.4, 10, 11)
    assert j.jump == pytest.approx(0.6)
    # Evals: one at the growth step itself already sees the grown model.
    j = loss_jump([5, 10, 15], [2.0, 2.5, 2.2], 10, step_is_after=True)
    assert (j.before, j.after, j.before_step, j.after_step) == (2.0, 2.5, 5, 10)
    j = loss_jump([8, 9], [3.0, 2.9], 10)
    assert (j.before, j.after, j.jump) == (2.9, None, None)


def test_run_result_matched_compute():
    r = run_result([0, 50, 100, 150, 200, 250], [5, 4, 3, 2.5, 2.2, 2.0], 260.0, target_loss=2.3, baseline_flops=400.0)
    # 2.3 lies 2/3 of the way from (150, 2.5) to (200, 2.2).
    assert r.flops_to_target == pytest.approx(150 + 50 * 2 / 3)
    assert r.flops_saved_pct == pytest.approx(100 * (1 - (150 + 50 * 2 / 3) / 400))
    assert r.loss_at_baseline_flops is None  # evaluated only up to 250 FLOPs
    assert (r.final_eval_loss, r.final_eval_flops, r.total_flops) == (2.0, 250.0, 260.0)
    # Needs more compute than the baseline: half way from (400, 2.5) to (600, 1.5).
    r = run_result([0, 200, 400, 600], [5, 3.5, 2.5, 1.5], 600.0, target_loss=2.0, baseline_flops=400.0)
    assert r.flops_to_target == 500.0 and r.flops_saved_pct == -25.0
    assert r.loss_at_baseline_flops == 2.5
    r = run_result([0, 100, 200], [5, 4, 3], 200.0, target_loss=2.3, baseline_flops=400.0)
    assert (r.flops_to_target, r.flops_saved_pct, r.loss_at_baseline_flops) == (None, None, None)


def test_drop_superseded_keeps_the_resumed_copy():
    recs = [{"step": s, "v": "old"} for s in (1, 2, 3, 4)] + [{"step": s, "v": "new"} for s in (3, 4, 5)]
    assert [(r["step"], r["v"]) for r in drop_superseded(recs)] == [(1, "old"), (2, "old"), (3, "new"), (4, "new"), (5, "new")]


# ---------------------------------------------------------------------------------------------
# Synthetic run directories

FLOPS_PER_STEP = 10.0  # every run spends 10 FLOPs per step, evaluates every 5 steps


def write_run(root: Path, label: str, seed: int, eval_losses: list[float], baseline=False, growth_steps=(), metrics=True):
    d = root / f"{label}_s{seed}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"name": label, "label": label, "seed": seed, "baseline": baseline, "max_steps": 5 * (len(eval_losses) - 1), "tags": []}))
    lines = []
    last = 5 * (len(eval_losses) - 1)
    for step in range(1, last + 1):
        # Training loss 3 - 0.01 * step, plus 0.5 right after each growth.
        loss = 3 - 0.01 * step + sum(0.5 for g in growth_steps if step > g)
        lines.append({"step": step, "depth": 2, "params": 1000, "tokens": 4 * step, "flops": FLOPS_PER_STEP * step, "wall_time": 0.5 * step + 0.1 * seed, "loss": loss})
        if step % 5 == 0:
            lines.append({"step": step, "depth": 2, "params": 1000, "tokens": 4 * step, "flops": FLOPS_PER_STEP * step, "wall_time": 0.5 * step + 0.1 * seed, "eval_loss": eval_losses[step // 5]})
    lines.insert(0, {"step": 0, "depth": 2, "params": 1000, "tokens": 0, "flops": 0.0, "wall_time": 0.0, "eval_loss": eval_losses[0]})
    if metrics:
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    events = [{"step": g, "from_depth": 2, "to_depth": 4, "operator": "stack_last", "init": "copy", "mapping": [0, 1, 0, 1], "seconds": 0.1, "tokens": 4 * g, "flops": FLOPS_PER_STEP * g, "loss_before": None} for g in growth_steps]
    (d / "growth_events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in events))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    # Eval points at FLOPs 0, 50, 100, ...
    dirs = [
        write_run(root, "baseline", 0, [5, 4, 3, 3, 2.6, 2.4, 2.4, 2.4, 2.4], baseline=True),  # final at 400 FLOPs
        write_run(root, "baseline", 1, [5, 4, 3, 3, 2.5, 2.3, 2.2, 2.2, 2.2], baseline=True),
        write_run(root, "stack", 0, [5, 4, 3, 2.5, 2.2, 2.0], growth_steps=(10,)),
        write_run(root, "stack", 1, [5, 4, 3, 2.6, 2.3, 2.1], growth_steps=(10,)),
        write_run(root, "short", 0, [5, 4, 3]),
    ]
    return root, dirs


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_compare_numbers_on_synthetic_runs(runs, tmp_path):
    _, dirs = runs
    out = tmp_path / "out"
    a = compare(dirs, out)
    # Target: mean of the baselines' final eval losses (2.4, 2.2) at their final eval (400 FLOPs).
    assert a.baseline == "baseline" and a.labels == ["baseline", "short", "stack"]
    assert a.target_loss == pytest.approx(2.3) and a.baseline_flops == 400.0
    rows = {(r["kind"], r["label"], r["seed"]): r for r in read_csv(out / "report.csv")}
    s0, s1 = rows[("run", "stack", "0")], rows[("run", "stack", "1")]
    # seed 0 crosses 2.3 two thirds of the way from (150, 2.5) to (200, 2.2); seed 1 hits it at 200.
    assert float(s0["flops_to_target"]) == pytest.approx(150 + 50 * 2 / 3)
    assert float(s1["flops_to_target"]) == pytest.approx(200.0)
    assert float(s1["flops_saved_pct"]) == pytest.approx(50.0)
    assert s0["loss_at_baseline_flops"] == "" and s0["loss_at_baseline_flops_missing"] == "1"
    lab = rows[("label", "stack", "")]
    assert float(lab["flops_to_target"]) == pytest.approx((150 + 50 * 2 / 3 + 200) / 2)
    assert float(lab["final_eval_loss"]) == pytest.approx(2.05)
    assert float(lab["final_eval_loss_std"]) == pytest.approx(math.sqrt(0.005))
    assert float(lab["total_flops"]) == 250.0
    # Baseline seed 0 ends at 2.4 > 2.3: not reached; so the label gets no mean.
    assert rows[("run", "baseline", "0")]["flops_to_target"] == ""
    assert float(rows[("run", "baseline", "1")]["flops_to_target"]) == pytest.approx(250.0)
    b = rows[("label", "baseline", "")]
    assert b["flops_to_target"] == "" and b["flops_to_target_missing"] == "1"
    assert float(rows[("run", "baseline", "0")]["loss_at_baseline_flops"]) == 2.4
    assert rows[("run", "short", "0")]["flops_to_target"] == ""

    # final eval loss: baseline (2.4, 2.2) vs stack (2.0, 2.1): |diff| 0.25 > 2 * sqrt(0.0125) = 0.2236.
    verdicts = {(r["a"], r["b"], r["field"]): r for r in seed_spread_rows(a)}
    v = verdicts[("baseline", "stack", "final_eval_loss")]
    assert v["verdict"] == "exceeds seed spread"
    assert v["diff"] == pytest.approx(-0.25) and v["threshold"] == pytest.approx(2 * math.sqrt(0.0125))
    assert verdicts[("baseline", "short", "final_eval_loss")]["verdict"] == "n/a (< 2 seeds)"
    assert verdicts[("baseline", "stack", "flops_to_target")]["verdict"] == "n/a (a seed has no value)"

    # Growth at step 10: training loss 2.90 at step 10, 3 - 0.11 + 0.5 = 3.39 at step 11.
    jumps = read_csv(out / "growth_jumps.csv")
    assert len(jumps) == 2 and {j["seed"] for j in jumps} == {"0", "1"}
    for j in jumps:
        assert float(j["train_jump"]) == pytest.approx(0.49)
        assert (j["train_before_step"], j["train_after_step"]) == ("10", "11")
        # The eval at step 10 runs after the growth at the end of step 10.
        assert (j["eval_before_step"], j["eval_after_step"]) == ("5", "10")

    md = (out / "report.md").read_text()
    assert "not reached (1/2 seeds)" in md
    assert "exceeds seed spread" in md
    assert "**2.3000**" in md and "+0.4900" in md


def test_compare_writes_plots(runs, tmp_path):
    _, dirs = runs
    out = tmp_path / "out"
    compare(dirs, out)
    for x in ("flops", "tokens", "wall_time"):
        assert (out / f"loss_vs_{x}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (out / f"loss_vs_{x}.svg").read_text()
        assert "<svg" in svg and "stack (2 seeds, band: min-max)" in svg
    assert (out / "report.md").exists() and (out / "report.csv").exists()


def test_baseline_choice(runs, tmp_path):
    root, dirs = runs
    extra = write_run(root, "baseline_equal_flops", 0, [5, 4, 3, 2.8, 2.5, 2.1], baseline=True)
    a = compare(dirs + [extra], tmp_path / "o1")
    assert a.baseline == "baseline" and a.target_loss == pytest.approx(2.3)
    a = compare(dirs + [extra], tmp_path / "o2", baseline="baseline_equal_flops")
    assert a.target_loss == 2.1 and a.baseline_flops == 250.0
    with pytest.raises(ValueError, match="no run has label 'nope'"):
        compare(dirs, tmp_path / "o3", baseline="nope")
    # Two baseline labels and none called "baseline": ambiguous.
    with pytest.raises(ValueError, match="several baseline labels"):
        compare([dirs[2], extra, write_run(root, "b2", 0, [5, 4], baseline=True)], tmp_path / "o4")
    # No baseline at all: matched columns are n/a.
    a = compare(dirs[2:], tmp_path / "o5")
    assert a.baseline is None and "matched-loss columns are n/a" in (tmp_path / "o5" / "report.md").read_text()


def test_resumed_and_truncated_metrics(tmp_path):
    d = write_run(tmp_path, "stack", 0, [5, 4, 3, 2.5], growth_steps=(10,))
    lines = (d / "metrics.jsonl").read_text().splitlines()
    # Resume from step 10: steps 11..15 are logged again with other values, then a half-written line.
    again = [json.loads(x) for x in lines if 10 < json.loads(x)["step"] <= 15]
    for x in again:
        x["loss" if "loss" in x else "eval_loss"] = 1.0
    text = "\n".join(lines) + "\n" + "".join(json.dumps(x) + "\n" for x in again) + '{"step": 16, "lo'
    (d / "metrics.jsonl").write_text(text)
    with pytest.warns(UserWarning, match="truncated last line"):
        run = load_run(d)
    assert [r["step"] for r in run.train] == list(range(1, 16))
    assert [r["loss"] for r in run.train if r["step"] > 10] == [1.0] * 5
    assert [(r["step"], r["eval_loss"]) for r in run.evals] == [(0, 5), (5, 4), (10, 3), (15, 1.0)]
    (d / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\nnot json\n{"step": 2, "loss": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        load_run(d)


class StubWandbRun:
    """What eval/compare.py uses of `wandb.apis.public.Run`: name, id, path, group, config, summary
    and `scan_history(keys=...)`, which (as wandb's does) yields only the rows that hold every key
    asked for, each with just those keys."""

    def __init__(self, name, group, config, rows, summary=None):
        self.name, self.id, self.group, self.config = name, name + "-id", group, config
        self.path = ["team", "proj", self.id]
        self.summary = summary or {}
        self.rows = [{**row, "_step": i} for i, row in enumerate(rows)]
        self.scanned = []

    def scan_history(self, keys=None, page_size=1000, min_step=None, max_step=None):
        self.scanned.append(tuple(keys))
        return iter([{k: row[k] for k in keys} for row in self.rows if all(k in row for k in keys)])


class StubApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None, order="+created_at", per_page=50, include_sweeps=True):
        self.calls.append((path, filters))
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


def wandb_rows(run_dir: Path) -> list[dict]:
    """The history rows the HF WandbCallback + growth/reporting.py log for a synthetic run of
    write_run: "eval_x" -> "eval/x", any other key k -> "train/k", growth events as their own rows."""
    rows = []
    for rec in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()):
        # GrowingTrainerMixin.log adds compute/* and growth/* to every log, training and eval.
        row = {"train/global_step": rec["step"], "_runtime": rec["wall_time"], "train/compute/flops": rec["flops"],
               "train/compute/tokens": rec["tokens"], "train/growth/depth": rec["depth"]}
        row.update({"train/loss": rec["loss"]} if "loss" in rec else {"eval/loss": rec["eval_loss"]})
        rows.append(row)
    for ev in map(json.loads, (run_dir / "growth_events.jsonl").read_text().splitlines()):
        rows.append({"growth/event_step": ev["step"], "growth/from_depth": ev["from_depth"], "growth/to_depth": ev["to_depth"],
                     "growth/seconds": ev["seconds"], "train/global_step": ev["step"], "train/compute/flops": ev["flops"]})
    return rows


def test_wandb_api_path_gives_the_numbers_of_the_run_directories(runs, tmp_path):
    _, dirs = runs
    stubs = []
    for d in dirs:
        meta = json.loads((d / "run.json").read_text())
        events = [json.loads(x) for x in (d / "growth_events.jsonl").read_text().splitlines()]
        recipe = {k: meta[k] for k in ("name", "label", "seed", "baseline")}
        # The group is the label (attach_reporting sets WANDB_RUN_GROUP); the recipe wins over it.
        stubs.append(StubWandbRun(d.name, meta["label"], {"recipe": recipe, "seed": meta["seed"]}, wandb_rows(d),
                                  {"growth/events": [{k: e[k] for k in ("step", "operator", "init")} for e in events]}))
    api = StubApi(stubs)
    from_api = load_wandb_runs("team/proj", api=api)
    assert api.calls == [("team/proj", None)]
    from_dirs = [load_run(d) for d in dirs]
    for a, b in zip(from_dirs, from_api):
        assert (b.label, b.seed, b.baseline, b.source) == (a.label, a.seed, a.baseline, "wandb API")
        assert b.path == f"wandb run team/proj/{a.path.name}-id" and b.name == a.path.name
        keys = ("step", "loss", "flops", "tokens", "depth")
        assert [tuple(r[k] for k in keys) for r in b.train] == [tuple(r[k] for k in keys) for r in a.train]
        assert [(r["step"], r["eval_loss"], r["flops"], r["wall_time"]) for r in b.evals] == \
               [(r["step"], r["eval_loss"], r["flops"], r["wall_time"]) for r in a.evals]
        assert [(e["step"], e["from_depth"], e["to_depth"], e.get("operator")) for e in b.events] == \
               [(e["step"], e["from_depth"], e["to_depth"], e["operator"]) for e in a.events]
    # Each key is scanned on its own: scan_history drops rows that lack any key asked for.
    assert ("_step", "train/global_step", "eval/loss") in stubs[0].scanned
    assert ("_step", "train/global_step", "train/loss") in stubs[0].scanned
    ra, rb = compare(from_dirs, tmp_path / "dirs"), compare(from_api, tmp_path / "api")
    assert rb.labels == ra.labels and (rb.target_loss, rb.baseline_flops) == (ra.target_loss, ra.baseline_flops)
    for x, y in zip(ra.runs, rb.runs):
        assert rb.results[id(y)] == ra.results[id(x)] and rb.jumps[id(y)] == ra.jumps[id(x)]
    assert (tmp_path / "api" / "report.md").read_text().count("wandb API") == len(dirs)

    # --group filters on the server side; a project without runs is a clear error.
    api = StubApi(stubs)
    assert {r.label for r in load_wandb_runs("team/proj", group="stack", api=api)} == {"stack"}
    assert api.calls == [("team/proj", {"group": "stack"})]
    with pytest.raises(ValueError, match="no runs in 'team/proj' with group 'nope'"):
        load_wandb_runs("team/proj", group="nope", api=StubApi(stubs))
    with pytest.raises(ValueError, match="expected ENTITY/PROJECT, got 'proj'"):
        load_wandb_runs("proj", api=StubApi(stubs))
    # Without a recipe in the config: label from the group, seed from the Trainer's "seed".
    bare = StubWandbRun("r", "grp", {"seed": 3}, wandb_rows(dirs[2]))
    (run,) = load_wandb_runs("team/proj", api=StubApi([bare]))
    assert (run.label, run.seed, run.baseline, len(run.evals)) == ("grp", 3, False, 6)


def test_run_dir_without_metrics_is_a_clear_error(tmp_path):
    d = write_run(tmp_path, "stack", 0, [5, 4, 3], metrics=False)
    with pytest.raises(ValueError, match="no metrics.jsonl or an empty one .*--wandb ENTITY/PROJECT"):
        load_run(d)


def test_cli_as_script(runs, tmp_path):
    _, dirs = runs
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, str(REPO / "eval" / "compare.py"), *map(str, dirs), "--out", str(out), "--ylim", "2", "3"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "5 runs, 3 labels, baseline 'baseline'" in res.stdout
    assert (out / "loss_vs_flops.svg").exists()
    res = subprocess.run([sys.executable, str(REPO / "eval" / "compare.py"), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "FLOPs to target" in res.stdout


@pytest.mark.slow
def test_reads_what_the_trainer_writes(tmp_path, monkeypatch):
    """A real growing Trainer run (growth/trainer.py + growth/reporting.py) logging to metrics.jsonl
    and offline wandb: the rows it logs to wandb, served through the API stub, give the same
    curves and events as metrics.jsonl, and compare() runs on it."""
    import datasets
    import torch
    import transformers
    import wandb

    from conftest import tiny_model
    from growth.reporting import attach_reporting
    from growth.trainer import enable_growth

    out = tmp_path / "stack_s0"
    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(out), "WANDB_RUN_GROUP": "stack",
                 "WANDB_TAGS": "stack"}.items():
        monkeypatch.setenv(k, v)
    logged, t0 = [], time.time()
    real_log = wandb.Run.log

    def recording_log(self, data, *args, **kwargs):  # what wandb stores as one history row
        logged.append({**data, "_runtime": time.time() - t0})
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", recording_log)
    g = torch.Generator().manual_seed(0)
    ids = ((torch.randint(2, 60, (32, 1), generator=g) + torch.arange(16)) % 95 + 2).tolist()
    ds = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = transformers.TrainingArguments(
        str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1, report_to=["wandb"],
        use_cpu=True, disable_tqdm=True, seed=0, eval_strategy="steps", eval_steps=2, save_strategy="no")
    trainer = transformers.Trainer(model=tiny_model("llama", layers=2).train(), args=args, train_dataset=ds, eval_dataset=ds.select(range(4)))
    enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": [[4, 4]]}})
    recipe = {"name": "stack", "label": "stack", "seed": 0, "baseline": False}
    attach_reporting(trainer, recipe, "stack")
    trainer.train()
    config, summary, group = dict(wandb.run.config), {"growth/events": wandb.run.summary["growth/events"]}, wandb.run.group
    wandb.finish()
    (out / "run.json").write_text(json.dumps({**recipe, "max_steps": 8, "tags": []}))

    from_jsonl = load_run(out)
    (from_wandb,) = load_wandb_runs("team/proj", api=StubApi([StubWandbRun("stack_s0", group, config, logged, summary)]))
    assert (from_wandb.label, from_wandb.seed, from_wandb.source) == ("stack", 0, "wandb API")
    keys = ("step", "flops", "tokens", "depth", "loss", "eval_loss")
    for kind in ("train", "evals"):
        a = [tuple(r.get(k) for k in keys) for r in getattr(from_jsonl, kind)]
        b = [tuple(r.get(k) for k in keys) for r in getattr(from_wandb, kind)]
        assert a == b and len(a) == (8 if kind == "train" else 4)
    assert [(e["step"], e["from_depth"], e["to_depth"], e["operator"]) for e in from_wandb.events] == \
           [(e["step"], e["from_depth"], e["to_depth"], e["operator"]) for e in from_jsonl.events] == [(4, 2, 4, "stack_last")]
    a = compare([out], tmp_path / "report")
    (tj, ej), = a.jumps[id(a.runs[0])]
    # Training loss logged at step 4 is the 2-layer model's; the eval at step 4 runs on the 4-layer one.
    assert (tj.before_step, tj.after_step, ej.before_step, ej.after_step) == (4, 5, 2, 4)
    assert [r["depth"] for r in from_jsonl.evals] == [2, 4, 4, 4]
    b = compare([from_wandb], tmp_path / "report_api")
    assert b.jumps[id(b.runs[0])] == a.jumps[id(a.runs[0])]


def test_paired_difference_by_seed():
    a = {0: 5.99, 1: 5.93, 2: 5.97}
    b = {0: 5.96, 1: 5.90, 2: 5.935}  # b - a = -0.03, -0.03, -0.035
    n, mean, std = paired_difference(a, b)
    assert n == 3 and abs(mean - (-0.095 / 3)) < 1e-12 and abs(std - 0.0028867513) < 1e-9
    assert exceeds_paired_noise(a, b) is True
    assert exceeds_seed_spread(list(a.values()), list(b.values())) is False  # the unpaired screen misses it
    assert exceeds_paired_noise(a, {0: 6.0, 1: 5.90, 2: 5.97}) is False  # signs differ
    assert paired_difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None
