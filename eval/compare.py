"""Compare training runs by validation loss against compute: plots, a Markdown and a CSV report.

    python -m eval.compare runs/baseline_s0 runs/baseline_s1 runs/stack_last_s0 runs/stack_last_s1 --out out/compare
    python -m eval.compare runs/* --out out/compare --baseline baseline_equal_flops
    python eval/compare.py runs/* --out out/compare --ylim 2.5 4   # as a script, zoomed in
    python eval/compare.py --wandb my-team/growth --group stack_last --out out/compare   # from a wandb project
    python eval/compare.py --smoke                                  # synthetic runs into a temp dir (seconds)

Runs come from run directories, from a wandb project, or both. Each RUN_DIR is one training run,
as written by the training script:
  run.json              {"name", "label", "seed", "baseline", "max_steps", "tags"}; runs that share
                        a label are seeds of one schedule and are aggregated
  metrics.jsonl         one object per log/eval: step, depth, params, tokens, flops, wall_time and
                        loss (training log) or eval_loss (evaluation)
  growth_events.jsonl   one object per growth: step, from_depth, to_depth, operator, tokens, flops, ...
                        (absent or empty for a run that never grows)

--wandb ENTITY/PROJECT reads every run of the project (--group: only that wandb group) through
wandb's public API (`wandb.Api().runs`, then `Run.scan_history` for each key we log: the HF
Trainer's `train/loss`, `eval/loss`, `train/global_step` and our `train/compute/flops`,
`train/compute/tokens`, `train/growth/depth`; wall time is wandb's `_runtime`; growth events are
the `growth/event_step` / `growth/from_depth` / `growth/to_depth` rows growth/reporting.py logs).
Label, seed and baseline come from the recipe in the run config (growth/reporting.py puts it
there), else the run's group. Records without flops/tokens/wall time take them from records of the
same step, or interpolate them in step.

Written into --out:
  loss_vs_flops.{png,svg}, loss_vs_tokens.{png,svg}, loss_vs_wall_time.{png,svg}
      eval loss against each x: per label the mean over seeds (interpolated onto the x values every
      seed covers), a min-max band over seeds, growth events as triangles on the curve plus a
      dotted vertical line, and the baseline's final eval loss as a dashed horizontal line.
  report.md, report.csv (one row per run and one per label), growth_jumps.csv (one row per run
  and growth event).

Definitions (also written into report.md):
  target           the baseline label's final eval loss, mean over its seeds. The baseline label
                   is --baseline, else "baseline" if such a label exists, else the label of the
                   runs with "baseline": true (there must be exactly one such label).
  baseline FLOPs   the baseline's training FLOPs at that final eval, mean over its seeds.
  FLOPs to target  the first FLOPs at which the run's eval curve reaches the target, interpolating
                   eval loss linearly in (linear, not log) FLOPs between adjacent eval points;
                   "not reached" if it never does. Never extrapolated.
  FLOPs saved      100 * (1 - FLOPs to target / baseline FLOPs).
  loss at baseline FLOPs   the run's eval curve at the baseline FLOPs, same interpolation; "n/a"
                   outside the run's evaluated range.
  loss jump        per growth event at step s: first training loss logged at a step > s minus the
                   last one logged at a step <= s; eval loss: first eval at a step >= s minus the
                   last one at a step < s. (The growth runs at the end of step s, before that
                   step's log and eval: the training loss logged at s is the old model's, a mean
                   since the previous log, and an eval at s is the grown model's.) Log every step
                   for sharp training-loss jumps.
  exceeds spread   two labels differ beyond the seed spread when |mean difference| > 2 * pooled
                   sample std (needs >= 2 seeds in each, with a value for every seed).

Resumed runs: when a step appears again in metrics.jsonl (or the wandb history), the later copy
replaces every earlier record of the same kind (train/eval) from that step on.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python eval/compare.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from eval.report import (
    Jump,
    RunResult,
    Spread,
    exceeds_paired_noise,
    exceeds_seed_spread,
    paired_difference,
    loss_jump,
    mean_curve,
    pooled_std,
    run_result,
    spread,
    value_at,
)

X_KEYS = {"flops": "training FLOPs", "tokens": "training tokens", "wall_time": "wall time (s)"}


@dataclass
class Run:
    path: Path | str  # the run directory, or "wandb run ENTITY/PROJECT/ID"
    name: str
    label: str
    seed: int | None
    baseline: bool
    train: list[dict]  # records with "loss", in step order
    evals: list[dict]  # records with "eval_loss", in step order
    events: list[dict]  # growth events, in step order
    records: list[dict] = field(repr=False, default_factory=list)  # all records (for step -> x lookups)
    source: str = "metrics.jsonl"

    def total(self, key: str) -> float | None:
        vals = [r[key] for r in self.records if r.get(key) is not None]
        return float(max(vals)) if vals else None

    def x_at_step(self, key: str, step: float) -> float | None:
        """`key` (flops, tokens, wall_time) at a step, interpolated between logged records."""
        pts = sorted((r["step"], r[key]) for r in self.records if r.get(key) is not None)
        return value_at([p[0] for p in pts], [p[1] for p in pts], step) if pts else None

    def event_x(self, event: dict, key: str) -> float | None:
        if event.get(key) is not None:
            return float(event[key])
        return self.x_at_step(key, event["step"])


# ---------------------------------------------------------------------------------------------
# Reading runs


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSON-lines file. A broken last line (a run killed mid-write) is skipped with a
    warning; a broken line elsewhere is an error."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}:{i + 1}: skipping truncated last line ({e})")
                continue
            raise ValueError(f"{path}:{i + 1}: not valid JSON: {e}") from e
    return out


# wandb history key -> our record field. The HF WandbCallback logs "eval_x" as "eval/x" and every
# other key k as "train/k" (so our "compute/flops" arrives as "train/compute/flops"); "_runtime" is
# wandb's seconds since the run started. "_step" is wandb's row counter, not the optimizer step.
WANDB_STEP = "train/global_step"
WANDB_KEYS = {
    "loss": "train/loss",
    "eval_loss": "eval/loss",
    "flops": "train/compute/flops",
    "tokens": "train/compute/tokens",
    "wall_time": "_runtime",
    "depth": "train/growth/depth",
    "params": "train/growth/params",
}
# Growth events, as growth/reporting.py logs them (one row per event; operator and init are in
# the run summary's "growth/events").
WANDB_EVENT_KEYS = {"step": "growth/event_step", "from_depth": "growth/from_depth", "to_depth": "growth/to_depth"}


def run_from_wandb(run) -> Run:
    """A Run from a `wandb.apis.public.Run`: its history, scanned one logged key at a time
    (`scan_history(keys=...)` returns only the rows that hold every key asked for, and an eval row
    does not hold the training loss) and put back together by wandb's row index `_step`; its
    label / seed / baseline from the recipe that growth/reporting.py puts into the run config
    (else the run's group, name and the Trainer's "seed")."""
    where = f"wandb run {'/'.join(getattr(run, 'path', None) or [run.id])}"
    rows: dict[int, dict] = {}  # wandb's row index "_step" -> our record: the logged rows, rebuilt
    for ours, key in WANDB_KEYS.items():
        for row in run.scan_history(keys=["_step", WANDB_STEP, key]):
            if isinstance(row.get(key), (int, float)) and not isinstance(row[key], bool):
                rows.setdefault(row["_step"], {"step": int(row[WANDB_STEP])})[ours] = row[key]
    records = [rows[i] for i in sorted(rows)]
    event_rows = run.scan_history(keys=list(WANDB_EVENT_KEYS.values()))
    events = [{ours: int(row[key]) for ours, key in WANDB_EVENT_KEYS.items()} for row in event_rows]
    summary_events = {e.get("step"): e for e in (run.summary.get("growth/events") or []) if isinstance(e, dict)}
    events = [{**summary_events.get(e["step"], {}), **e} for e in events]
    recipe = run.config.get("recipe") or {}
    label = recipe.get("label") or run.group or run.name
    seed = recipe.get("seed", run.config.get("seed"))
    return make_run(where, run.name, label, seed, bool(recipe.get("baseline", False)), records, events, "wandb API")


def load_wandb_runs(project: str, group: str | None = None, api=None) -> list[Run]:
    """The runs of a wandb project "ENTITY/PROJECT" (only those of `group` if given), through the
    public API (`wandb.Api().runs`, `Run.scan_history`); needs network access and a login."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise ValueError(f"--wandb: expected ENTITY/PROJECT, got {project!r}")
    if api is None:
        import wandb

        api = wandb.Api()
    found = list(api.runs(project, filters={"group": group} if group else None))
    if not found:
        raise ValueError(f"--wandb: no runs in {project!r}" + (f" with group {group!r}" if group else ""))
    return [run_from_wandb(r) for r in found]


def drop_superseded(records: list[dict]) -> list[dict]:
    """Keep the last copy of a resumed history: a record whose step is not past the previous one
    replaces all earlier records from its step on."""
    out: list[dict] = []
    for r in records:
        while out and out[-1]["step"] >= r["step"]:
            out.pop()
        out.append(r)
    return out


def fill_missing_x(records: list[dict]) -> None:
    """Give records without flops/tokens/wall_time the value logged at the same step, else the
    value interpolated in step between neighbours (None outside them). In place."""
    for key in X_KEYS:
        have = sorted((r["step"], r[key]) for r in records if r.get(key) is not None)
        if not have:
            continue
        by_step = {s: v for s, v in reversed(have)}  # first value logged at a step
        steps, vals = [s for s, _ in have], [v for _, v in have]
        for r in records:
            if r.get(key) is None:
                r[key] = by_step.get(r["step"], value_at(steps, vals, r["step"]))


def make_run(path, name: str, label: str, seed, baseline: bool, records: list[dict], events: list[dict],
             source: str) -> Run:
    """A Run from its records (metrics.jsonl objects, or wandb history rows mapped to our names)."""
    for i, r in enumerate(records):
        if not isinstance(r.get("step"), (int, float)):
            raise ValueError(f"{path} ({source}) record {i}: missing or non-numeric 'step': {r}")
    fill_missing_x(records)
    train = drop_superseded([r for r in records if r.get("loss") is not None])
    evals = drop_superseded([r for r in records if r.get("eval_loss") is not None])
    return Run(path=path, name=name, label=label, seed=seed, baseline=baseline, train=train, evals=evals,
               events=drop_superseded(events), records=records, source=source)


def load_run(run_dir: str | Path) -> Run:
    """A run directory written by the training script: run.json, metrics.jsonl, growth_events.jsonl."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.exists():
        raise ValueError(f"{run_dir}: no run.json (is this a run directory?)")
    meta = json.loads(meta_path.read_text())
    if "label" not in meta:
        raise ValueError(f"{meta_path}: missing key 'label'")
    metrics = run_dir / "metrics.jsonl"
    records = read_jsonl(metrics) if metrics.exists() else []
    if not records:
        raise ValueError(f"{run_dir}: no metrics.jsonl or an empty one (for runs logged to wandb, use --wandb ENTITY/PROJECT)")
    ev_path = run_dir / "growth_events.jsonl"
    events = read_jsonl(ev_path) if ev_path.exists() else []
    return make_run(run_dir, meta.get("name", run_dir.name), meta["label"], meta.get("seed"),
                    bool(meta.get("baseline", False)), records, events, "metrics.jsonl")


def pick_baseline(runs: list[Run], label: str | None) -> str | None:
    """The baseline label: `label` if given, else "baseline" if present, else the one label of the
    runs marked baseline. None if there is no baseline at all."""
    labels = sorted({r.label for r in runs})
    if label is not None:
        if label not in labels:
            raise ValueError(f"--baseline: no run has label {label!r}; labels are {labels}")
        return label
    if "baseline" in labels:
        return "baseline"
    marked = sorted({r.label for r in runs if r.baseline})
    if len(marked) > 1:
        raise ValueError(f"several baseline labels {marked}; choose the matched-loss target with --baseline")
    return marked[0] if marked else None


# ---------------------------------------------------------------------------------------------
# Numbers


def curve(run: Run, x_key: str) -> tuple[list[float], list[float]]:
    """The run's eval loss against x_key (points without x dropped). Raises if x goes backwards."""
    pts = [(float(r[x_key]), float(r["eval_loss"])) for r in run.evals if r.get(x_key) is not None]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    for i in range(1, len(xs)):
        if xs[i] < xs[i - 1]:
            raise ValueError(f"{run.path}: {x_key} decreases between evals at steps {run.evals[i - 1]['step']} and {run.evals[i]['step']}")
    return xs, ys


@dataclass
class Analysis:
    runs: list[Run]
    labels: list[str]  # baseline first, then sorted
    baseline: str | None
    target_loss: float | None
    baseline_flops: float | None
    results: dict[int, RunResult]  # id(run) -> result
    jumps: dict[int, list[tuple[Jump, Jump]]]  # id(run) -> per event (train jump, eval jump)

    def runs_of(self, label: str) -> list[Run]:
        return sorted((r for r in self.runs if r.label == label), key=lambda r: (r.seed is None, r.seed, r.name))


RESULT_FIELDS = ("final_eval_loss", "total_flops", "flops_to_target", "flops_saved_pct", "loss_at_baseline_flops")
COMPARED_FIELDS = ("final_eval_loss", "loss_at_baseline_flops", "flops_to_target")


def analyze(runs: list[Run], baseline: str | None) -> Analysis:
    if not runs:
        raise ValueError("no runs given")
    base = pick_baseline(runs, baseline)
    others = sorted({r.label for r in runs} - {base})
    labels = ([base] if base else []) + others
    target = base_flops = None
    if base is not None:
        finals = [curve(r, "flops") for r in runs if r.label == base]
        if any(not xs for xs, _ in finals):
            raise ValueError(f"baseline label {base!r} has a run without eval losses at known FLOPs")
        target = spread([ys[-1] for _, ys in finals]).mean
        base_flops = spread([xs[-1] for xs, _ in finals]).mean
    results, jumps = {}, {}
    for r in runs:
        xs, ys = curve(r, "flops")
        results[id(r)] = run_result(xs, ys, r.total("flops"), target, base_flops)
        t_steps, t_loss = [x["step"] for x in r.train], [x["loss"] for x in r.train]
        e_steps, e_loss = [x["step"] for x in r.evals], [x["eval_loss"] for x in r.evals]
        # The growth runs in on_step_end of its step; the Trainer logs and evaluates after that, so
        # the training loss logged at that step is still the old model's, an eval at that step the new one's.
        jumps[id(r)] = [
            (loss_jump(t_steps, t_loss, ev["step"]), loss_jump(e_steps, e_loss, ev["step"], step_is_after=True))
            for ev in r.events
        ]
    return Analysis(runs, labels, base, target, base_flops, results, jumps)


def label_spreads(a: Analysis, label: str) -> dict[str, Spread]:
    res = [a.results[id(r)] for r in a.runs_of(label)]
    return {f: spread([getattr(x, f) for x in res]) for f in RESULT_FIELDS}


def seed_spread_rows(a: Analysis) -> list[dict]:
    """Pairwise label comparisons on COMPARED_FIELDS, with the exceeds-seed-spread verdict."""
    rows = []
    for i, la in enumerate(a.labels):
        for lb in a.labels[i + 1 :]:
            for f in COMPARED_FIELDS:
                va = [getattr(a.results[id(r)], f) for r in a.runs_of(la)]
                vb = [getattr(a.results[id(r)], f) for r in a.runs_of(lb)]
                if None in va or None in vb:
                    verdict, diff, thresh = "n/a (a seed has no value)", None, None
                else:
                    ex = exceeds_seed_spread(va, vb)
                    diff = spread(vb).mean - spread(va).mean
                    if ex is None:
                        verdict, thresh = "n/a (< 2 seeds)", None
                    else:
                        thresh = 2 * pooled_std(va, vb)
                        verdict = "exceeds seed spread" if ex else "within seed spread"
                # Paired by seed: the same seed means the same initial weights and batches.
                pa = {r.seed: getattr(a.results[id(r)], f) for r in a.runs_of(la) if r.seed is not None}
                pb = {r.seed: getattr(a.results[id(r)], f) for r in a.runs_of(lb) if r.seed is not None}
                pa = {k: v for k, v in pa.items() if v is not None}
                pb = {k: v for k, v in pb.items() if v is not None}
                paired = paired_difference(pa, pb)
                ex_p = exceeds_paired_noise(pa, pb)
                rows.append({"a": la, "b": lb, "field": f, "diff": diff, "threshold": thresh, "verdict": verdict,
                             "paired": paired, "paired_verdict": "n/a (< 2 common seeds)" if ex_p is None else
                             ("exceeds paired seed noise" if ex_p else "within paired seed noise")})
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def _num(v: float | None, kind: str) -> str:
    if v is None:
        return ""
    if kind == "flops":
        return f"{v:.4g}"
    if kind == "pct":
        return f"{v:.1f}"
    return f"{v:.4f}"


# Per RESULT_FIELDS entry: number format, what a missing value means, table header.
_KIND = {"final_eval_loss": "loss", "total_flops": "flops", "flops_to_target": "flops", "flops_saved_pct": "pct",
         "loss_at_baseline_flops": "loss"}
_MISSING = {"final_eval_loss": "n/a", "total_flops": "n/a", "flops_to_target": "not reached",
            "flops_saved_pct": "not reached", "loss_at_baseline_flops": "n/a"}
_HEADERS = {"final_eval_loss": "final eval loss", "total_flops": "total FLOPs", "flops_to_target": "FLOPs to target",
            "flops_saved_pct": "FLOPs saved %", "loss_at_baseline_flops": "loss at baseline FLOPs"}


def _fmt_run_value(v: float | None, f: str) -> str:
    return _MISSING[f] if v is None else _num(v, _KIND[f])


def _fmt_spread(s: Spread, f: str) -> str:
    if s.missing:
        return f"{_MISSING[f]} ({s.missing}/{s.n + s.missing} seeds)"
    if s.n == 1:
        return _num(s.mean, _KIND[f])
    k = _KIND[f]
    return f"{_num(s.mean, k)} ± {_num(s.std, k)} [{_num(s.min, k)}, {_num(s.max, k)}]"


def plot(a: Analysis, x_key: str, out_dir: Path, ylim: tuple[float, float] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(a.labels):
        color = colors[i % len(colors)]
        runs = a.runs_of(label)
        curves = []
        for r in runs:
            try:
                xs, ys = curve(r, x_key)
            except ValueError as e:
                warnings.warn(f"{e}; leaving this run out of loss_vs_{x_key}")
                continue
            if xs:
                curves.append((xs, ys))
        if not curves:
            continue
        grid, mean, _, lo, hi = mean_curve(curves)
        n = len(curves)
        name = f"{label} ({n} seeds, band: min-max)" if n > 1 else label
        ax.plot(grid, mean, color=color, label=name, marker="." if n == 1 else None)
        if n > 1:
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
        seen = set()
        for r in runs:
            for ev in r.events:
                ex = r.event_x(ev, x_key)
                if ex is None or round(ex, 6) in seen:
                    continue
                seen.add(round(ex, 6))
                ax.axvline(ex, color=color, linestyle=":", alpha=0.4, linewidth=1)
                ey = value_at(grid, mean, ex) if grid else None
                if ey is not None:
                    ax.plot([ex], [ey], marker="v", color=color, markersize=7, linestyle="none")
    if a.target_loss is not None:
        ax.axhline(a.target_loss, color="gray", linestyle="--", linewidth=1, label=f"target: {a.baseline} final eval loss")
    ax.plot([], [], marker="v", color="black", linestyle="none", label="growth event")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(X_KEYS[x_key])
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"validation loss vs {X_KEYS[x_key]}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / f"loss_vs_{x_key}.png", out_dir / f"loss_vs_{x_key}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"Date": None})
    plt.close(fig)
    return paths


def write_csv(a: Analysis, out_dir: Path) -> None:
    cols = ["kind", "label", "name", "seed", "n_seeds", "baseline", "path"]
    for f in RESULT_FIELDS:
        cols += [f, f + "_std", f + "_min", f + "_max", f + "_missing"]
    rows = []
    for label in a.labels:
        for r in a.runs_of(label):
            res = a.results[id(r)]
            row = {"kind": "run", "label": label, "name": r.name, "seed": r.seed, "n_seeds": 1, "baseline": r.baseline,
                   "path": str(r.path)}
            for f in RESULT_FIELDS:
                row[f] = getattr(res, f)
                row[f + "_missing"] = int(getattr(res, f) is None)
            rows.append(row)
        row = {"kind": "label", "label": label, "n_seeds": len(a.runs_of(label)), "baseline": label == a.baseline}
        for f, s in label_spreads(a, label).items():
            # A mean over only the seeds that reached the target would be biased: leave it empty.
            ok = s.missing == 0 and s.n > 0
            for suffix, v in (("", s.mean), ("_std", s.std), ("_min", s.min), ("_max", s.max)):
                row[f + suffix] = v if ok else None
            row[f + "_missing"] = s.missing
        rows.append(row)
    with open(out_dir / "report.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    jcols = ["label", "name", "seed", "event", "step", "from_depth", "to_depth", "operator", "flops", "seconds"]
    jcols += ["train_loss_before", "train_loss_after", "train_jump", "train_before_step", "train_after_step"]
    jcols += ["eval_loss_before", "eval_loss_after", "eval_jump", "eval_before_step", "eval_after_step"]
    with open(out_dir / "growth_jumps.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=jcols)
        w.writeheader()
        for label in a.labels:
            for r in a.runs_of(label):
                for k, (ev, (tj, ej)) in enumerate(zip(r.events, a.jumps[id(r)])):
                    row = {"label": label, "name": r.name, "seed": r.seed, "event": k}
                    row.update({c: ev.get(c) for c in ("step", "from_depth", "to_depth", "operator", "flops", "seconds")})
                    for pre, j in (("train", tj), ("eval", ej)):
                        row.update({f"{pre}_loss_before": j.before, f"{pre}_loss_after": j.after, f"{pre}_jump": j.jump,
                                    f"{pre}_before_step": j.before_step, f"{pre}_after_step": j.after_step})
                    w.writerow({k2: ("" if v is None else v) for k2, v in row.items()})



def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt_jump(s: Spread) -> str:
    if s.n == 0:
        return "n/a"
    text = f"{s.mean:+.4f}" if s.n == 1 else f"{s.mean:+.4f} ± {s.std:.4f}"
    return text + (f" ({s.missing} seeds n/a)" if s.missing else "")


def write_markdown(a: Analysis, out_dir: Path, plots: list[Path]) -> None:
    L = ["# Loss versus compute", "", md_target(a), ""]
    L += [
        "Definitions:",
        "- *FLOPs to target*: first training FLOPs at which the run's eval loss reaches the target; eval loss is "
        "interpolated linearly in (linear, not log) FLOPs between adjacent eval points, never extrapolated "
        "(\"not reached\" if the curve never gets there).",
        "- *FLOPs saved %*: 100 × (1 − FLOPs to target / baseline FLOPs).",
        "- *loss at baseline FLOPs*: the run's eval curve at the baseline FLOPs, same interpolation; n/a outside its evaluated range.",
        "- *loss jump* at a growth event at step s (the growth runs at the end of step s, before that step's log and eval): "
        "training loss: first logged at a step > s minus the last logged at a step <= s (a logged loss is a mean over "
        "the logging interval); eval loss: first eval at a step >= s minus the last eval at a step < s.",
        "- Label rows: mean ± sample std [min, max] over seeds; when a seed has no value the label shows how many lack it and no mean.",
        "- A difference between two labels *exceeds the seed spread* when |difference of means| > 2 × pooled sample std "
        "(needs ≥ 2 seeds per label). With 2–3 seeds this is a rough screen, not a significance test.",
        "",
        "## Per label",
        "",
    ]
    fields = list(RESULT_FIELDS)
    L += md_label_table(a)
    L += ["", "## Per run", ""]
    rows = []
    for label in a.labels:
        for r in a.runs_of(label):
            res = a.results[id(r)]
            values = [_fmt_run_value(getattr(res, f), f) for f in fields]
            rows.append([f"`{label}`", r.name, r.seed, len(r.evals), r.source] + values)
    L += _md_table(["label", "run", "seed", "evals", "source"] + [_HEADERS[f] for f in fields], rows)
    L += ["", "## Differences between labels", ""]
    L += md_differences(a)
    L += ["", "## Loss jumps at growth events", ""]
    L += md_jumps(a)
    L += ["", "## Plots", ""]
    for p in plots:
        if p.suffix == ".png":
            L += [f"![{p.stem}]({p.name})", ""]
    (out_dir / "report.md").write_text("\n".join(L) + "\n")


def md_target(a: Analysis) -> str:
    """One Markdown line: the baseline label and the target loss the matched-loss columns use."""
    if a.baseline is None:
        return "No baseline run (no label `baseline`, no run with `\"baseline\": true`, no `--baseline`): matched-loss columns are n/a."
    return (f"Baseline label: `{a.baseline}`. Target loss (its final eval loss, mean over {len(a.runs_of(a.baseline))} seed(s)): "
            f"**{a.target_loss:.4f}**, reached by the baseline at **{a.baseline_flops:.4g}** training FLOPs (mean over seeds).")


def md_label_table(a: Analysis) -> list[str]:
    """Markdown lines: the matched-loss table, one row per label (mean ± std [min, max] over seeds)."""
    rows = []
    for label in a.labels:
        sp = label_spreads(a, label)
        rows.append([f"`{label}`", len(a.runs_of(label))] + [_fmt_spread(sp[f], f) for f in RESULT_FIELDS])
    return _md_table(["label", "seeds"] + [_HEADERS[f] for f in RESULT_FIELDS], rows)


def md_differences(a: Analysis) -> list[str]:
    """Markdown lines: pairwise label differences with the unpaired and paired noise verdicts."""
    L, rows = [], []
    for row in seed_spread_rows(a):
        k = _KIND[row["field"]]
        paired = row["paired"]
        paired_txt = f"{_num(paired[1], k)} ± {_num(paired[2], k)} (n={paired[0]})" if paired else "n/a"
        rows.append([f"`{row['a']}`", f"`{row['b']}`", _HEADERS[row["field"]], _num(row["diff"], k) or "n/a",
                     _num(row["threshold"], k) or "n/a", row["verdict"], paired_txt, row["paired_verdict"]])
    if rows:
        L += ["Difference = mean(b) − mean(a). Unpaired: |difference| > 2 × pooled std. Paired (runs of the same "
              "seed share initial weights and batches): per-seed differences b − a, mean ± std; they exceed the "
              "noise when every seed has the same sign and |mean| > 2 × their std.", ""]
        L += _md_table(["a", "b", "quantity", "difference", "2 × pooled std", "verdict", "paired difference",
                        "paired verdict"], rows)
    else:
        L += ["Only one label."]
    return L


def md_jumps(a: Analysis) -> list[str]:
    """Markdown lines: the loss jump at each growth event, per label (mean ± std over seeds)."""
    L, rows = [], []
    for label in a.labels:
        runs = [r for r in a.runs_of(label) if r.events]
        if not runs:
            continue
        for k in range(max(len(r.events) for r in runs)):
            evs = [(r, r.events[k], a.jumps[id(r)][k]) for r in runs if k < len(r.events)]
            ev0 = evs[0][1]
            steps = sorted({e["step"] for _, e, _ in evs})
            tj = spread([j[0].jump for _, _, j in evs])
            ej = spread([j[1].jump for _, _, j in evs])
            gaps = sorted({(j[0].before_step, j[0].after_step) for _, _, j in evs if j[0].jump is not None})
            depth = f"{ev0.get('from_depth')}→{ev0.get('to_depth')}"
            used = ",".join(f"{b}→{c}" for b, c in gaps)
            rows.append([f"`{label}`", k, ",".join(map(str, steps)), depth, ev0.get("operator", ""), len(evs),
                         _fmt_jump(tj), used, _fmt_jump(ej)])
    if rows:
        header = ["label", "event", "step", "depth", "operator", "seeds", "train loss jump", "train steps used", "eval loss jump"]
        L += _md_table(header, rows)
        L += ["", "Per run and event: `growth_jumps.csv`."]
    else:
        L += ["No growth events."]
    return L


def compare(runs: list[Run | str | Path], out_dir: str | Path, baseline: str | None = None,
            ylim: tuple[float, float] | None = None) -> Analysis:
    """Load the runs (Run objects or run directories), write plots, report.md, report.csv and
    growth_jumps.csv into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    a = analyze([r if isinstance(r, Run) else load_run(r) for r in runs], baseline)
    plots = [p for x in X_KEYS for p in plot(a, x, out_dir, ylim)]
    write_csv(a, out_dir)
    write_markdown(a, out_dir, plots)
    return a


def write_smoke_runs(root: Path) -> list[Path]:
    """Synthetic run directories for --smoke: a baseline and a schedule growing at step 10, 2 seeds."""
    dirs = []
    for label, grows in (("baseline", False), ("stack", True)):
        for seed in (0, 1):
            d = root / f"{label}_s{seed}"
            d.mkdir(parents=True)
            (d / "run.json").write_text(json.dumps({"name": d.name, "label": label, "seed": seed, "baseline": not grows}))
            rows = []
            for step in range(0, 41):
                depth = 4 if grows and step > 10 else (2 if grows else 4)
                flops = 1e6 * (2 * min(step, 10) + 4 * max(step - 10, 0) if grows else 4 * step)
                x = {"step": step, "depth": depth, "tokens": 64 * step, "flops": flops, "wall_time": 0.1 * step}
                loss = 4.0 / (1 + 0.05 * step) + 0.05 * seed - (0.1 if grows else 0.0)
                rows += [{**x, "loss": loss}] + ([{**x, "eval_loss": loss + 0.1}] if step % 5 == 0 else [])
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            events = [{"step": 10, "from_depth": 2, "to_depth": 4, "operator": "stack_last"}] if grows else []
            (d / "growth_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
            dirs.append(d)
    return dirs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="training run directories (with run.json)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None, help="also read the runs of this wandb project (public API; needs a login)")
    p.add_argument("--group", default=None, help="with --wandb: only the runs of this wandb group (a schedule label)")
    p.add_argument("--out", default=None, help="directory for the plots and reports (required unless --smoke)")
    p.add_argument("--baseline", default=None, help='label of the matched-loss target (default: "baseline", else the label of the runs marked baseline)')
    p.add_argument("--ylim", nargs=2, type=float, metavar=("LO", "HI"), help="y range of the plots (the first evals of a run dwarf the differences at the end)")
    p.add_argument("--smoke", action="store_true", help="compare synthetic runs written into a temp dir (or --out)")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:  # into a temporary directory, removed afterwards
        import tempfile

        with tempfile.TemporaryDirectory(prefix="compare_smoke_") as tmp:
            return main([*(argv if argv is not None else sys.argv[1:]), "--out", tmp])
    if args.smoke:
        args.run_dirs = write_smoke_runs(Path(args.out) / "runs")
    if args.out is None:
        p.error("--out is required")
    if not args.run_dirs and not args.wandb:
        p.error("give run directories, --wandb ENTITY/PROJECT, or both")
    if args.group and not args.wandb:
        p.error("--group filters the runs of --wandb ENTITY/PROJECT; run directories are chosen by path")
    try:
        runs = [load_run(d) for d in args.run_dirs] + (load_wandb_runs(args.wandb, args.group) if args.wandb else [])
        a = compare(runs, args.out, args.baseline, tuple(args.ylim) if args.ylim else None)
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(f"{len(a.runs)} runs, {len(a.labels)} labels, baseline {a.baseline!r}: wrote {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
