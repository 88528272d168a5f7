"""One command: train a baseline and growth schedules over several seeds, then write the comparison.

    python eval/sweep.py --out runs/sweep                                   # tiny default: 5 recipes x 3 seeds + equal-FLOPs baseline
    python eval/sweep.py --out runs/sweep --max_steps 120 --seeds 2 --extra "--model.hidden_size 64"
    python eval/sweep.py --out runs/sweep --recipes tiny,tiny_baseline --jobs 2
    python eval/sweep.py --out runs/paper --preset paper                    # init copy / zero / random / scaled_copy(0.5, 0.9)
    python eval/sweep.py --smoke                                            # tiny + baseline, 1 seed, 8 steps, temp dir (seconds)

Each (schedule, seed) is one ``scripts/train.py`` process writing into OUT/runs/<label>-s<seed> (its
log in OUT/logs/). Runs differ only in ``--seed`` (model init, dropout); ``--data_seed`` is fixed, so
every run sees the same batches in the same order, and evaluation points are the recipe's
(fractions of max_steps), so equal-length runs evaluate at the same steps.

Two baselines:
  baseline              the full-depth model trained for the same steps (and tokens) as the growth
                        runs: the matched-loss target; "FLOPs saved" in the report is against it.
  baseline_equal_flops  the full-depth model given exactly the default growth run's training FLOPs,
                        i.e. fewer steps, with its own LR schedule (warmup, cosine) over that budget:
                        at equal compute, which model is better?

Finished runs (run.json with the final step, and the saved model) are skipped, so a killed sweep
continues where it stopped; an unfinished run resumes from its last checkpoint. Writes
OUT/report (eval/compare.py: plots, report.md, report.csv) and OUT/summary.{json,md} (steps,
tokens, wall time of every run and of the whole sweep).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as `python eval/sweep.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from growth.flops import cumulative_training_flops, training_flops_per_token
from growth.schedule import GrowthSchedule

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = ("tiny", "tiny_baseline", "tiny_stack_middle", "tiny_stack_all", "tiny_zero")
EQUAL_FLOPS = "baseline_equal_flops"
DATA_SEED = 0


@dataclass
class Job:
    """One training run: a recipe file, its overrides, a label and a seed."""

    label: str
    config: str
    seed: int
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.label}-s{self.seed}"


# ---------------------------------------------------------------------------------------------
# Compute arithmetic


def growth_run_flops(config, seq_len: int, schedule: GrowthSchedule, max_steps: int, tokens_per_step: int) -> float:
    """Training FLOPs of a growth run of ``max_steps`` steps; ``config`` is the model's (any depth)."""
    fpt = partial(training_flops_per_token, config, seq_len)
    steps = schedule.to_steps(max_steps, tokens_per_step, fpt)
    return cumulative_training_flops(steps, max_steps, tokens_per_step, fpt)


def equal_flops_steps(config, seq_len: int, schedule: GrowthSchedule, max_steps: int, tokens_per_step: int) -> int:
    """Steps at the schedule's final depth that cost the growth run's FLOPs (rounded to nearest)."""
    total = growth_run_flops(config, seq_len, schedule, max_steps, tokens_per_step)
    per_step = tokens_per_step * training_flops_per_token(config, seq_len, schedule.final_depth)
    return max(1, round(total / per_step))


# ---------------------------------------------------------------------------------------------
# Runs


def is_finished(run_dir: Path) -> bool:
    info_path = run_dir / "run.json"
    if not info_path.exists() or not (run_dir / "config.json").exists():
        return False
    info = json.loads(info_path.read_text())
    return info.get("global_step") is not None and info["global_step"] >= info.get("max_steps", 0)


def command(job: Job, run_dir: Path, max_steps: int | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / job.config), "--label", job.label,
           "--seed", str(job.seed), "--data_seed", str(DATA_SEED), "--output_dir", str(run_dir)]
    if max_steps is not None:
        cmd += ["--max_steps", str(max_steps)]
    cmd += [*extra, *job.overrides]  # the job's own overrides last: they win
    if run_dir.exists() and any(run_dir.iterdir()):
        has_checkpoint = any(p.name.startswith("checkpoint-") for p in run_dir.iterdir())
        cmd += ["--resume_from_checkpoint", "true"] if has_checkpoint else ["--overwrite_output_dir", "true"]
    return cmd


@contextlib.contextmanager
def output_to(log_path: Path):
    """This process's stdout and stderr (the file descriptors: C++ and worker output too) appended
    to ``log_path`` for the duration; for training runs inside the calling process."""
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def train(job: Job, out: Path, max_steps: int | None, extra: list[str], in_process: bool = False) -> dict:
    """Run one job (unless finished); returns its run.json with the sweep's wall time added.
    ``in_process``: through growth.run.main in this process (one job at a time: no interpreter and
    library start per run), else as scripts/train.py in a subprocess."""
    run_dir = out / "runs" / job.name
    if is_finished(run_dir):
        print(f"[sweep] {job.name}: finished earlier, skipped", flush=True)
        return json.loads((run_dir / "run.json").read_text())
    cmd = command(job, run_dir, max_steps, extra)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"{job.name}.log"
    print(f"[sweep] {job.name}: {shlex.join(cmd[1:])}", flush=True)
    start = time.time()
    if in_process:
        from growth.run import main as train_main

        with output_to(log):
            try:
                rc = train_main(cmd[2:])
            except Exception:
                traceback.print_exc()
                rc = 1
    else:
        with open(log, "a") as f:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if rc != 0 or not is_finished(run_dir):
        raise RuntimeError(f"{job.name} failed (exit {rc}); see {log}")
    info = json.loads((run_dir / "run.json").read_text())
    info["sweep_wall_s"] = time.time() - start
    (run_dir / "sweep.json").write_text(json.dumps({"sweep_wall_s": info["sweep_wall_s"]}) + "\n")
    print(f"[sweep] {job.name}: done in {info['sweep_wall_s']:.0f} s, final eval loss {info.get('final_eval_loss')}", flush=True)
    return info


def equal_flops_job_steps(growth_dir: Path) -> tuple[int, float]:
    """(max_steps, growth FLOPs) for the equal-FLOPs baseline, from a finished growth run's files."""
    from transformers import AutoConfig

    from growth.recipe import parse_yaml

    recipe = parse_yaml((growth_dir / "recipe.yaml").read_text())
    info = json.loads((growth_dir / "run.json").read_text())
    config = AutoConfig.from_pretrained(growth_dir)  # the saved (grown) model's config
    t = recipe["training"]
    tokens_per_step = recipe["data"]["block_size"] * t["per_device_train_batch_size"] * t.get("gradient_accumulation_steps", 1)
    schedule = GrowthSchedule.from_dict(recipe["growth"]["schedule"])
    args = (config, recipe["data"]["block_size"], schedule, info["global_step"], tokens_per_step)
    total = growth_run_flops(*args)
    logged = [r["flops"] for r in _metrics(growth_dir) if r.get("step") == info["global_step"] and "flops" in r]
    if logged and abs(logged[-1] - total) > 1e-9 * total:
        raise RuntimeError(f"{growth_dir}: FLOPs from the schedule {total:.6g} differ from the logged {logged[-1]:.6g}")
    return equal_flops_steps(*args), total


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


# ---------------------------------------------------------------------------------------------
# Plans


def recipe_label(name: str, extra: list[str]) -> str:
    from growth.recipe import load_recipe

    return load_recipe(ROOT / "recipes" / f"{name}.yaml", list(extra)).label


def plan(preset: str, recipes: list[str], seeds: int, extra: list[str]) -> tuple[list[Job], str, str]:
    """(jobs, label whose FLOPs the equal-FLOPs baseline matches, report baseline label)."""
    seed_list = range(seeds)
    if preset == "paper":
        # Issue 6: the same schedule and operator, only the new layers' initialisation differs.
        cfg = "recipes/tiny.yaml"
        inits = {"init_copy": ["--growth.init", "copy"], "init_zero": ["--growth.init", "zero"],
                 "init_random": ["--growth.init", "random"],
                 "init_scaled_copy_b0.5": ["--growth.init", "scaled_copy", "--growth.beta", "0.5"],
                 "init_scaled_copy_b0.9": ["--growth.init", "scaled_copy", "--growth.beta", "0.9"]}
        jobs = [Job(label, cfg, s, o) for label, o in inits.items() for s in seed_list]
        return jobs, "init_copy", EQUAL_FLOPS
    if preset != "default":
        raise ValueError(f"--preset: expected default or paper, got {preset!r}")
    jobs = [Job(recipe_label(r, extra), f"recipes/{r}.yaml", s) for r in recipes for s in seed_list]
    growth_label = recipe_label("tiny", extra)
    if not any(j.label == growth_label for j in jobs):
        raise ValueError(f"--recipes: must include tiny (the shipped default, whose FLOPs {EQUAL_FLOPS} matches), got {recipes}")
    return jobs, growth_label, "baseline"


def summarize(out: Path, infos: list[dict], jobs: list[Job], wall: float) -> dict:
    rows = []
    for job, info in zip(jobs, infos):
        run_dir = out / "runs" / job.name
        last = [r for r in _metrics(run_dir) if "tokens" in r]
        sweep_file = run_dir / "sweep.json"
        rows.append({"run": job.name, "label": job.label, "seed": job.seed, "steps": info.get("global_step"),
                     "tokens": last[-1]["tokens"] if last else None, "flops": last[-1]["flops"] if last else None,
                     "final_eval_loss": info.get("final_eval_loss"), "train_runtime_s": info.get("train_runtime_s"),
                     "wall_s": json.loads(sweep_file.read_text())["sweep_wall_s"] if sweep_file.exists() else None})
    total = {k: sum(r[k] or 0 for r in rows) for k in ("steps", "tokens", "flops", "train_runtime_s", "wall_s")}
    summary = {"runs": rows, "total": total, "sweep_wall_s_this_invocation": wall}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| run | steps | tokens | FLOPs | final eval loss | train s | wall s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = f"{r['final_eval_loss']:.4f}" if r["final_eval_loss"] is not None else "n/a"
        lines.append(f"| {r['run']} | {r['steps']} | {r['tokens']:,} | {r['flops']:.3g} | {loss} | "
                     f"{r['train_runtime_s'] or 0:.0f} | {r['wall_s'] or 0:.0f} |")
    lines.append(f"| **total** | {total['steps']} | {total['tokens']:,} | {total['flops']:.3g} | | "
                 f"{total['train_runtime_s']:.0f} | {total['wall_s']:.0f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def sweep(out: str | Path, seeds: int = 3, max_steps: int | None = None, recipes: list[str] = DEFAULT_RECIPES,
          extra: list[str] = (), jobs: int = 1, preset: str = "default"):
    """Train every run of the plan, the equal-FLOPs baseline, then write the report; returns the Analysis."""
    from eval.compare import compare

    if seeds < 1:
        raise ValueError(f"--seeds: must be at least 1, got {seeds}")
    if jobs < 1:
        raise ValueError(f"--jobs: must be at least 1, got {jobs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max_steps: must be positive, got {max_steps}")
    out, extra = Path(out).resolve(), list(extra)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    planned, growth_label, baseline = plan(preset, list(recipes), seeds, extra)
    run = partial(train, out=out, max_steps=max_steps, extra=extra, in_process=jobs == 1)

    # The default growth run of seed 0 first: the equal-FLOPs baseline's length comes from it.
    first = next(j for j in planned if j.label == growth_label)
    infos = {first.name: run(first)}
    steps, flops = equal_flops_job_steps(out / "runs" / first.name)
    print(f"[sweep] {EQUAL_FLOPS}: {steps} steps at full depth = {flops:.4g} FLOPs of {growth_label}", flush=True)
    overrides = ["--max_steps", str(steps)]
    base_cfg = "recipes/tiny_baseline.yaml"
    planned += [Job(EQUAL_FLOPS, base_cfg, s, overrides) for s in range(seeds)]
    rest = [j for j in planned if j is not first]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for job, info in zip(rest, pool.map(run, rest)):
            infos[job.name] = info
    wall = time.time() - start
    all_jobs = [first, *rest]
    summary = summarize(out, [infos[j.name] for j in all_jobs], all_jobs, wall)
    analysis = compare([out / "runs" / j.name for j in all_jobs], out / "report", baseline=baseline)
    t = summary["total"]
    print(f"[sweep] {len(all_jobs)} runs: {t['steps']} steps, {t['tokens']:,} tokens, {t['wall_s']:.0f} s of runs "
          f"({wall:.0f} s this invocation); wrote {out / 'report' / 'report.md'} and {out / 'summary.md'}", flush=True)
    return analysis


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="sweep directory (runs/, logs/, report/, summary.*); required unless --smoke")
    p.add_argument("--smoke", action="store_true",
                   help="checks the pipeline in seconds: tiny and tiny_baseline, 1 seed, 8 steps of a width-32 model, into --out or a temp dir")
    p.add_argument("--seeds", type=int, default=3, help="seeds per schedule: 0 .. N-1")
    p.add_argument("--max_steps", type=int, default=None, help="steps of every run except the equal-FLOPs baseline (default: the recipe's)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated recipe names under recipes/ (must include tiny)")
    p.add_argument("--extra", default="", help='overrides passed to every run, e.g. "--model.hidden_size 64"')
    p.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    p.add_argument("--preset", default="default", choices=("default", "paper"),
                   help="paper: growth with init copy / zero / random / scaled_copy beta 0.5, 0.9 and the equal-FLOPs baseline")
    a = p.parse_args(argv)
    if a.smoke:
        import tempfile

        a.out = a.out or tempfile.mkdtemp(prefix="sweep_smoke_")
        a.seeds, a.max_steps, a.recipes, a.preset = 1, 8, "tiny,tiny_baseline", "default"
        a.extra = (f"--model.hidden_size 32 --data.block_size 32 --model.max_position_embeddings 32 --data.max_train_bytes 200000 "
                   f"--data.max_eval_tokens 512 --tokenizer.vocab_size 512 --per_device_train_batch_size 4 "
                   f"--per_device_eval_batch_size 16 --save_strategy no --disable_tqdm true --report_to none "
                   f"--data.cache_dir {os.path.join(a.out, 'cache')} {a.extra}")
    elif not a.out:
        p.error("--out is required (or --smoke)")
    try:
        sweep(a.out, a.seeds, a.max_steps, [r for r in a.recipes.split(",") if r], shlex.split(a.extra), a.jobs, a.preset)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
