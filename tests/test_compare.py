"""eval/report.py arithmetic on hand-made curves, and eval/compare.py end to end on synthetic run
directories (metrics.jsonl and a real offline wandb run)."""

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

from eval.compare import compare, drop_superseded, load_run, read_wandb_records, seed_spread_rows
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


WANDB_SCRIPT = r"""
import sys, wandb
run = wandb.init(project="p", dir=sys.argv[1], mode="offline", config={"a": 1})
run.log({f"junk/{i}": float(i) for i in range(4000)})  # one record > 32 KiB: split across blocks
for step in range(1, 21):
    # Key names as the HF WandbCallback writes our logs ("compute/flops" -> "train/compute/flops").
    run.log({"train/loss": 3 - 0.01 * step, "train/global_step": step, "train/compute/flops": 10.0 * step,
             "train/compute/tokens": 4 * step, "train/growth/depth": 2})
    if step % 5 == 0:
        run.log({"eval/loss": 4 - 0.1 * step, "train/global_step": step})
run.finish()
"""


def wait_for_wandb_file(root: Path, timeout: float = 300.0) -> Path:
    """The offline run file under root/wandb once it holds the run's exit record: wandb.finish()
    returns before wandb-core has flushed the file."""
    from wandb.proto import wandb_internal_pb2

    deadline = time.time() + timeout
    while True:
        for f in root.glob("wandb/offline-run-*/run-*.wandb"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a half-written tail is expected here
                raws = read_wandb_records(f)
            for raw in raws:
                rec = wandb_internal_pb2.Record()
                rec.ParseFromString(raw)
                if rec.WhichOneof("record_type") == "exit":
                    return f
        assert time.time() < deadline, f"no complete wandb run file under {root} after {timeout} s"
        time.sleep(0.2)


def test_reads_offline_wandb_run(tmp_path):
    d = write_run(tmp_path, "stack", 0, [5, 4, 3, 2.5], metrics=False)
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "-c", WANDB_SCRIPT, str(d)], check=True, env=env, timeout=120)
    f = wait_for_wandb_file(d)
    assert f.stat().st_size > 3 * 32768
    assert len(read_wandb_records(f)) > 40

    run = load_run(d)
    assert run.source.startswith("wandb/offline-run-")
    assert [(r["step"], r["loss"], r["flops"], r["tokens"]) for r in run.train] == [(s, 3 - 0.01 * s, 10.0 * s, 4 * s) for s in range(1, 21)]
    # Eval logs carry no FLOPs of their own: they take the training log's of the same step.
    assert [(r["step"], r["eval_loss"], r["flops"]) for r in run.evals] == [(s, 4 - 0.1 * s, 10.0 * s) for s in (5, 10, 15, 20)]
    assert all(r["wall_time"] is not None and r["wall_time"] >= 0 for r in run.evals)
    a = compare([d], tmp_path / "out")
    assert a.results[id(a.runs[0])].final_eval_loss == pytest.approx(2.0)


def test_truncated_wandb_file_reads_complete_records(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "-c", WANDB_SCRIPT, str(d)], check=True, env=env, timeout=120)
    f = wait_for_wandb_file(d)
    full = read_wandb_records(f)
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(f.read_bytes()[: f.stat().st_size - 10])
    with pytest.warns(UserWarning, match="truncated or corrupt chunk"):
        part = read_wandb_records(cut)
    assert part == full[: len(part)] and len(part) == len(full) - 1


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
    """A real growing Trainer run (growth/trainer.py) logging to metrics.jsonl and offline wandb:
    both sources give the same curves, and compare() runs on it."""
    import datasets
    import torch
    import transformers
    import wandb

    from conftest import tiny_model
    from growth.trainer import enable_growth

    out = tmp_path / "stack_s0"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(out))
    g = torch.Generator().manual_seed(0)
    ids = ((torch.randint(2, 60, (32, 1), generator=g) + torch.arange(16)) % 95 + 2).tolist()
    ds = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = transformers.TrainingArguments(
        str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1, report_to=["wandb"],
        use_cpu=True, disable_tqdm=True, seed=0, eval_strategy="steps", eval_steps=2, save_strategy="no")
    trainer = transformers.Trainer(model=tiny_model("llama", layers=2).train(), args=args, train_dataset=ds, eval_dataset=ds.select(range(4)))
    enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": [[4, 4]]}})
    trainer.train()
    wandb.finish()
    wait_for_wandb_file(out)
    (out / "run.json").write_text(json.dumps({"name": "stack", "label": "stack", "seed": 0, "baseline": False, "max_steps": 8, "tags": []}))

    from_jsonl = load_run(out)
    (out / "metrics.jsonl").rename(out / "metrics.jsonl.bak")
    from_wandb = load_run(out)
    assert from_wandb.source.startswith("wandb/")
    keys = ("step", "flops", "tokens", "depth", "loss", "eval_loss")
    for kind in ("train", "evals"):
        a = [tuple(r.get(k) for k in keys) for r in getattr(from_jsonl, kind)]
        b = [tuple(r.get(k) for k in keys) for r in getattr(from_wandb, kind)]
        assert a == b and len(a) == (8 if kind == "train" else 4)
    assert [e["step"] for e in from_jsonl.events] == [4]
    a = compare([out], tmp_path / "report")
    (tj, ej), = a.jumps[id(a.runs[0])]
    # Training loss logged at step 4 is the 2-layer model's; the eval at step 4 runs on the 4-layer one.
    assert (tj.before_step, tj.after_step, ej.before_step, ej.after_step) == (4, 5, 2, 4)
    assert [r["depth"] for r in from_jsonl.evals] == [2, 4, 4, 4]


def test_paired_difference_by_seed():
    a = {0: 5.99, 1: 5.93, 2: 5.97}
    b = {0: 5.96, 1: 5.90, 2: 5.935}  # b - a = -0.03, -0.03, -0.035
    n, mean, std = paired_difference(a, b)
    assert n == 3 and abs(mean - (-0.095 / 3)) < 1e-12 and abs(std - 0.0028867513) < 1e-9
    assert exceeds_paired_noise(a, b) is True
    assert exceeds_seed_spread(list(a.values()), list(b.values())) is False  # the unpaired screen misses it
    assert exceeds_paired_noise(a, {0: 6.0, 1: 5.90, 2: 5.97}) is False  # signs differ
    assert paired_difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None
