"""The compute study: growth schedules against the tuned fixed-depth frontier, at equal training FLOPs.

    python eval/study.py --out runs/study --jobs 2          # the CPU study (docs/study.md): ~250 runs
    python eval/study.py --out runs/study --report_only     # tables and plots from the runs finished so far
    python eval/study.py --smoke --out /tmp/study_smoke     # the whole pipeline in seconds (tiny sizes)
    python eval/study.py --preset gpu_125m --out runs/gpu_study --launch "accelerate launch --num_processes 8"

Protocol (what a reviewer of a growth paper asks for; "No Train No Gain", Kaddour et al. 2023):
  budgets     3 training-FLOPs budgets, fractions (1/4, 1/2, 1) of the reference: the FLOPs of the
              base recipe's growth schedule (2 -> 4 -> 6 at 25% / 50%) over --ref_steps (2000) steps.
  arms        fixed-depth models of every depth a schedule passes through (2, 4, 6, 8) and growth
              schedules: WSD early (25% / 50%) vs late (60% / 80%) growth, 2 -> 4 -> 6 vs 2x steps
              2 -> 4 -> 8; at the largest budget also the inits copy / scaled_copy (beta 0.5) /
              zero / random on the early 2 -> 4 -> 6 schedule.
  equal FLOPs every arm trains for the number of steps whose FLOPs (growth.flops, counting the
              depth in force at each step) come closest to the budget, with its own LR schedule
              (warmup-stable-decay, from the recipe) over exactly those steps.
  LR          every arm and budget sweeps the same LR grid on seed 0 and keeps the one with the
              lowest final validation loss; a best LR at the edge of the grid extends the grid by
              a factor 2 that way (at most --max_extend times; an edge that remains is flagged).
  seeds       seeds 1 .. N-1 at the picked LR (the pick is made on seed 0, which is also reported:
              the same small optimistic bias for every arm). Seeds change the model's init; the
              data order is the same for every run (--data_seed 0), so seeds are paired in data.
  statistics  mean and sample std over seeds; a difference within 2 pooled std is a tie.

Outputs in --out: runs/<arm>-b<budget>-lr<lr>-s<seed>/ (each a scripts/train.py-style run
directory), logs/, study.json (everything), study.md (tables), frontier.png (final eval loss vs
training FLOPs, log x: the fixed-depth frontier against each growth schedule), inits.png.

Resumable: a run with run.json at its final step is skipped; an unfinished run starts again
(runs are short: no checkpoints). Runs execute in --jobs worker processes, each importing
torch once and running runs in-process with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as `python eval/study.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from eval.report import exceeds_seed_spread, pooled_std, spread
from eval.sweep import growth_run_flops, is_finished, output_to
from growth.flops import training_flops_per_token
from growth.schedule import GrowthSchedule

ROOT = Path(__file__).resolve().parent.parent
DATA_SEED = 0


# ---------------------------------------------------------------------------------------------
# What runs


@dataclass(frozen=True)
class Arm:
    """A model/schedule to train at each budget: a fixed depth, or a growth schedule (fractions)."""

    label: str
    depth: int | None = None  # fixed depth
    points: tuple = ()  # growth: ((fraction, depth), ...) from initial_depth
    initial_depth: int = 2
    init: str = "copy"
    beta: float = 1.0

    @property
    def fixed(self) -> bool:
        return self.depth is not None

    def schedule(self) -> GrowthSchedule | None:
        if self.fixed:
            return None
        return GrowthSchedule(initial_depth=self.initial_depth, points=self.points, unit="fraction")

    def overrides(self) -> list[str]:
        if self.fixed:
            return ["--model.num_layers", str(self.depth), "--growth.schedule", "null"]
        s = self.schedule()
        return ["--model.num_layers", str(self.initial_depth), "--growth.schedule", json.dumps(s.to_dict()),
                "--growth.init", self.init, "--growth.beta", str(self.beta)]


@dataclass
class StudyConfig:
    recipe: str = "recipes/study_tiny.yaml"
    extra: list = field(default_factory=list)  # overrides for every run
    ref_steps: int = 2000  # the reference budget: the reference arm over this many steps
    ref_arm: str = "wsd_early_2-4-6"
    budgets: tuple = (0.25, 0.5, 1.0)
    initial_depth: int = 2  # every growth schedule starts here
    fixed_depths: tuple = (2, 4, 6, 8)
    growth: tuple = (("wsd_early_2-4-6", ((0.25, 4), (0.5, 6))), ("wsd_late_2-4-6", ((0.6, 4), (0.8, 6))),
                     ("wsd_early_2-4-8", ((0.25, 4), (0.5, 8))), ("wsd_late_2-4-8", ((0.6, 4), (0.8, 8))))
    # Inits on the reference schedule at inits_budget; "copy" is the reference arm itself.
    inits: tuple = (("init_scaled_copy_b0.5", "scaled_copy", 0.5), ("init_zero", "zero", 1.0),
                    ("init_random", "random", 1.0))
    inits_budget: float | None = None  # where the inits are compared; None: the largest budget
    lrs: tuple = (2.5e-3, 5e-3, 1e-2)
    max_extend: int = 2
    seeds: int = 3

    def arms(self) -> list[Arm]:
        return ([Arm(f"fixed_{d}", depth=d) for d in self.fixed_depths]
                + [Arm(l, points=tuple(p), initial_depth=self.initial_depth) for l, p in self.growth])

    def init_arms(self) -> list[Arm]:
        ref = self.arm(self.ref_arm)
        return [replace(ref, label=l, init=i, beta=b) for l, i, b in self.inits]

    def init_budget(self) -> float:
        return self.inits_budget if self.inits_budget is not None else max(self.budgets)

    def arm(self, label: str) -> Arm:
        return next(a for a in self.arms() + (self.init_arms() if label.startswith("init_") else []) if a.label == label)


SMOKE = StudyConfig(
    extra=["--model.hidden_size", "16", "--model.num_heads", "2", "--data.block_size", "16",
           "--model.max_position_embeddings", "16", "--tokenizer.vocab_size", "300", "--data.max_train_bytes", "300000",
           "--data.max_eval_tokens", "256", "--per_device_train_batch_size", "4", "--eval_steps", "0.25",
           "--logging_steps", "0.25"],
    ref_steps=16, budgets=(0.5, 1.0), fixed_depths=(2,), growth=(("wsd_early_2-4", ((0.25, 4),)),),
    ref_arm="wsd_early_2-4", inits=(("init_zero", "zero", 1.0),), lrs=(2e-3, 8e-3), max_extend=0, seeds=2)


# The GPU frontier: a 125M-class llama (recipes/study_gpu_125m.yaml: FineWeb-Edu, GPT-2 tokenizer, bf16, WSD,
# 524k tokens per step on 8 GPUs), fixed depths 3 / 6 / 12 against 3 -> 6 -> 12 grown early or late.
GPU_125M = StudyConfig(
    recipe="recipes/study_gpu_125m.yaml", ref_steps=3000, ref_arm="wsd_early_3-6-12", initial_depth=3,
    fixed_depths=(3, 6, 12), growth=(("wsd_early_3-6-12", ((0.25, 6), (0.5, 12))), ("wsd_late_3-6-12", ((0.6, 6), (0.8, 12)))),
    inits=(("init_zero", "zero", 1.0),), lrs=(3e-4, 6e-4, 1.2e-3), max_extend=1, seeds=3)
PRESETS = {"cpu": None, "gpu_125m": GPU_125M}


@dataclass(frozen=True)
class Job:
    arm: str
    budget: float
    lr: float
    seed: int
    steps: int

    @property
    def name(self) -> str:
        return f"{self.arm}-b{self.budget:g}-lr{self.lr:g}-s{self.seed}"


# ---------------------------------------------------------------------------------------------
# Compute matching


def run_flops(config, seq_len: int, tokens_per_step: int, arm: Arm, steps: int) -> float:
    """Training FLOPs of ``arm`` over ``steps`` steps (the depth in force at each step)."""
    if arm.fixed:
        return steps * tokens_per_step * training_flops_per_token(config, seq_len, arm.depth)
    return growth_run_flops(config, seq_len, arm.schedule(), steps, tokens_per_step)


def steps_for_budget(config, seq_len: int, tokens_per_step: int, arm: Arm, budget_flops: float) -> int:
    """The step count whose FLOPs come closest to ``budget_flops`` (FLOPs grow with steps)."""
    f = partial(run_flops, config, seq_len, tokens_per_step, arm)
    lo, hi = 1, 2
    while _safe_flops(f, hi) < budget_flops:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: flops(lo) < budget <= flops(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _safe_flops(f, mid) < budget_flops else (lo, mid)
    return min((lo, hi), key=lambda s: abs(_safe_flops(f, s) - budget_flops))


def _safe_flops(f, steps: int) -> float:
    try:
        return f(steps)
    except ValueError:  # too few steps for the schedule's points: never the answer
        return -math.inf


# ---------------------------------------------------------------------------------------------
# Selection and statistics (pure functions, unit-tested)


def pick_lr(losses: dict[float, float | None]) -> tuple[float | None, str | None]:
    """(best LR, edge) from seed-0 final losses per LR; NaN / missing count as diverged (never best).

    edge is "low" / "high" when the best LR is the smallest / largest of the grid, else None.
    """
    finite = {lr: l for lr, l in losses.items() if l is not None and math.isfinite(l)}
    if not finite:
        return None, None
    best = min(finite, key=lambda lr: (finite[lr], lr))
    grid = sorted(losses)
    edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
    return best, edge


def next_lr(losses: dict[float, float | None], extended: int, max_extend: int) -> float | None:
    """The LR to add to a finished grid whose best is at an edge (x2 or /2), or None."""
    best, edge = pick_lr(losses)
    if best is None or edge is None or extended >= max_extend:
        return None
    return best * 2 if edge == "high" else best / 2


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for one value: the spread is unknown)."""
    s = spread(values)
    return s.mean, (s.std if s.n > 1 else None)


def compare_to(a: list[float], b: list[float]) -> dict:
    """a - b: difference of means, pooled sample std, and the verdict (tie within 2 pooled std)."""
    diff = spread(a).mean - spread(b).mean
    real = exceeds_seed_spread(a, b)  # eval/report.py's criterion, shared with eval/compare.py
    if real is None:
        return {"diff": diff, "pooled_std": None, "verdict": "n/a (1 seed)"}
    return {"diff": diff, "pooled_std": pooled_std(a, b), "verdict": ("lower" if diff < 0 else "higher") if real else "tie"}


def frontier(per_budget: dict[float, dict[str, list[float]]]) -> dict[float, tuple[str, list[float]]]:
    """Per budget, the fixed-depth arm with the lowest mean loss and its per-seed losses."""
    out = {}
    for budget, arms in per_budget.items():
        done = {label: v for label, v in arms.items() if v}
        if done:
            label = min(done, key=lambda l: mean_std(done[l])[0])
            out[budget] = (label, done[label])
    return out


def flops_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """First x where the piecewise-linear curve through (log x, loss) points reaches ``target``.

    Used on a budget curve (final loss at each budget): log-linear interpolation between budgets,
    never extrapolated; None when no point reaches the target.
    """
    pts = sorted(points)
    for i, (x, y) in enumerate(pts):
        if y <= target:
            if i == 0:
                return x
            x0, y0 = pts[i - 1]
            t = (y0 - target) / (y0 - y)
            return math.exp(math.log(x0) + t * (math.log(x) - math.log(x0)))
    return None


def wsd_stable_phase(max_steps: int, warmup_steps: int, decay_steps: int) -> tuple[int, int]:
    """[first, last] step of the constant-LR phase of transformers' warmup_stable_decay."""
    return warmup_steps, max_steps - decay_steps - 1


def growth_steps_in_stable(schedule: GrowthSchedule, max_steps: int, warmup_steps: int, decay_steps: int) -> list[int]:
    """The growth steps of ``schedule`` at ``max_steps``; ValueError if one is outside the stable phase."""
    first, last = wsd_stable_phase(max_steps, warmup_steps, decay_steps)
    steps = [int(p) for p, _ in schedule.to_steps(max_steps).points]
    for i, s in enumerate(steps):
        if not first <= s <= last:
            raise ValueError(f"points[{i}]: growth at step {s} of {max_steps} is outside the WSD stable phase "
                             f"(steps {first}..{last}: {warmup_steps} warmup, {decay_steps} decay)")
    return steps


# ---------------------------------------------------------------------------------------------
# Running (worker processes)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def run_job(recipe_path: str, overrides: list[str], run_dir: str, log_path: str) -> dict:
    """Train one run in this process, its output into ``log_path``; returns run.json plus wall time."""
    from growth.recipe import load_recipe
    from growth.run import RunOptions, run

    start = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with output_to(Path(log_path)):
        try:
            info = run(load_recipe(ROOT / recipe_path, overrides), RunOptions(overwrite_output_dir=True))
        except Exception:
            traceback.print_exc()
            raise
    info["study_wall_s"] = time.time() - start
    (Path(run_dir) / "study.json").write_text(json.dumps({"study_wall_s": info["study_wall_s"]}) + "\n")
    return info


def launch_job(launch: list[str], recipe_path: str, overrides: list[str], run_dir: str, log_path: str) -> dict:
    """Train one run as ``launch + scripts/train.py`` (e.g. under ``accelerate launch`` on GPUs)."""
    start = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    cmd = [*launch, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / recipe_path), *overrides]
    run = Path(run_dir)  # long GPU runs save checkpoints: an interrupted one continues from its last
    resume = run.is_dir() and any(p.name.startswith("checkpoint-") for p in run.iterdir())
    cmd += ["--resume_from_checkpoint", "true"] if resume else ["--overwrite_output_dir", "true"]
    with open(log_path, "a") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if rc != 0 or not is_finished(Path(run_dir)):
        raise RuntimeError(f"exit {rc}: {shlex.join(cmd)}")
    info = json.loads((Path(run_dir) / "run.json").read_text())
    info["study_wall_s"] = time.time() - start
    (Path(run_dir) / "study.json").write_text(json.dumps({"study_wall_s": info["study_wall_s"]}) + "\n")
    return info


# ---------------------------------------------------------------------------------------------
# The study


class Study:
    def __init__(self, out: Path, cfg: StudyConfig, launch: list[str] | None = None):
        from growth.recipe import load_recipe

        self.out, self.cfg, self.launch = out, cfg, launch
        self.base_overrides = [*cfg.extra, "--data.cache_dir", str(out / "cache"), "--data_seed", str(DATA_SEED)]
        self.recipe = load_recipe(ROOT / cfg.recipe, self.base_overrides)
        t = self.recipe.training
        self.seq_len = self.recipe.data.block_size
        self.tokens_per_step = self.seq_len * t["per_device_train_batch_size"] * t.get("gradient_accumulation_steps", 1)
        self.results: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self._steps: dict = {}

    # -- setup -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Tokenizer and packed data once, before workers start (they then load the cache)."""
        from growth.models import build_config
        from growth.run import build_data

        tokenizer, train, _ = build_data(self.recipe)
        self.vocab = len(tokenizer)
        self.config = build_config(self.recipe.model, self.vocab)
        self.ref_flops = run_flops(self.config, self.seq_len, self.tokens_per_step, self.cfg.arm(self.cfg.ref_arm),
                                   self.cfg.ref_steps)
        self.train_blocks = len(train)
        self.check_growth_in_stable()

    def check_growth_in_stable(self) -> None:
        """Under WSD, every growth run's events must fall inside its stable phase (else early and
        late differ in the LR at growth too, not only in timing): checked for every cell before the
        first run, naming the arm, the budget and the step."""
        from growth.recipe import WSD, warmup_steps_of, wsd_decay_steps

        t, share = self.recipe.training, self.recipe.lr_decay_share
        if t.get("lr_scheduler_type") != WSD or share is None:
            return
        for arm, budget, _ in self.cells():
            if arm.fixed:
                continue
            steps = self.steps(arm, budget)
            try:
                growth_steps_in_stable(arm.schedule(), steps, warmup_steps_of(t, steps), wsd_decay_steps(share, steps))
            except ValueError as e:
                raise ValueError(f"{self.cfg.recipe}: {arm.label} at budget {budget:g} ({steps} steps), "
                                 f"lr_decay_share {share}: {e}") from None

    def budget_flops(self, budget: float) -> float:
        return budget * self.ref_flops

    def steps(self, arm: Arm, budget: float) -> int:
        key = (arm, budget)
        if key not in self._steps:
            self._steps[key] = steps_for_budget(self.config, self.seq_len, self.tokens_per_step, arm, self.budget_flops(budget))
        return self._steps[key]

    def planned_flops(self, arm: Arm, steps: int) -> float:
        return run_flops(self.config, self.seq_len, self.tokens_per_step, arm, steps)

    # -- the plan, as a function of the results so far ------------------------------------------
    def cells(self) -> list[tuple[Arm, float, int]]:
        """(arm, budget, group): the main arms at every budget (group 0), the inits at theirs (group 1)."""
        main = [(a, b, 0) for b in self.cfg.budgets for a in self.cfg.arms()]
        return main + [(a, self.cfg.init_budget(), 1) for a in self.cfg.init_arms()]

    def loss(self, job: Job) -> float | None:
        info = self.results.get(job.name)
        if info is None or info.get("max_steps") != job.steps:  # another budget's run in this dir: not this job
            return None
        v = info.get("final_eval_loss")
        return math.nan if v is None else v

    def sweep_state(self, arm: Arm, budget: float) -> tuple[dict[float, float | None], list[float], bool]:
        """(seed-0 loss per LR tried or planned, LRs still to run, grid final)."""
        steps = self.steps(arm, budget)
        lrs = list(self.cfg.lrs)
        for _ in range(self.cfg.max_extend + 1):
            losses = {lr: self.loss(Job(arm.label, budget, lr, 0, steps)) for lr in lrs}
            todo = [lr for lr, l in losses.items() if l is None and Job(arm.label, budget, lr, 0, steps).name not in self.failed]
            if todo or any(Job(arm.label, budget, lr, 0, steps).name in self.failed for lr in lrs):
                return losses, todo, False
            extra = next_lr(losses, len(lrs) - len(self.cfg.lrs), self.cfg.max_extend)
            if extra is None:
                return losses, [], True
            lrs.append(extra)
        return losses, [], True

    def ready_jobs(self) -> list[tuple[tuple, Job]]:
        # Order, so that an interrupted study has the most to show: budget by budget (smallest first), every
        # main arm's LR sweep, then its seeds (complete cells: statistics, not single runs), then the inits
        # if this is their budget.
        ready = []
        for arm, budget, group in self.cells():
            steps = self.steps(arm, budget)
            losses, todo, final = self.sweep_state(arm, budget)
            ready += [((budget, group, 0), Job(arm.label, budget, lr, 0, steps)) for lr in todo]
            best, _ = pick_lr(losses)
            if final and best is not None:
                ready += [((budget, group, 1), Job(arm.label, budget, best, s, steps)) for s in range(1, self.cfg.seeds)]
        return [(p, j) for p, j in ready if self.loss(j) is None and j.name not in self.failed]

    def job_overrides(self, job: Job) -> list[str]:
        arm = self.cfg.arm(job.arm)
        return [*self.base_overrides, *arm.overrides(), "--max_steps", str(job.steps), "--learning_rate", repr(job.lr),
                "--seed", str(job.seed), "--label", job.arm, "--name", job.name,  # label: the wandb group
                "--tags", json.dumps([f"budget:{job.budget:g}", f"lr:{job.lr:g}", "study"]),
                "--output_dir", str(self.out / "runs" / job.name)]

    def load_finished(self) -> None:
        runs = self.out / "runs"
        for d in sorted(runs.iterdir()) if runs.exists() else []:
            if is_finished(d):
                info = json.loads((d / "run.json").read_text())
                sj = d / "study.json"
                info["study_wall_s"] = json.loads(sj.read_text())["study_wall_s"] if sj.exists() else None
                self.results[d.name] = info

    def check_flops(self, job: Job) -> None:
        """The run's logged FLOPs must be the planned ones (the budget match is real, not assumed)."""
        rows = [json.loads(l) for l in (self.out / "runs" / job.name / "metrics.jsonl").read_text().splitlines() if l.strip()]
        logged = [r["flops"] for r in rows if r.get("step") == job.steps and "flops" in r]
        planned = self.planned_flops(self.cfg.arm(job.arm), job.steps)
        if not logged or abs(logged[-1] - planned) > 1e-9 * planned:
            raise RuntimeError(f"{job.name}: logged FLOPs {logged[-1:]} differ from the planned {planned:.6g}")

    def run(self, jobs: int = 1, report_every: float = 120.0) -> None:
        self.load_finished()
        print(f"[study] {len(self.results)} runs finished earlier; reference budget {self.ref_flops:.4g} FLOPs "
              f"({self.cfg.ref_arm} over {self.cfg.ref_steps} steps)", flush=True)
        start, last_report = time.time(), time.time()
        # spawn: the workers start clean (no forked tokenizer or torch thread state from this process)
        pool = (ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init, mp_context=multiprocessing.get_context("spawn"))
                if jobs > 1 and not self.launch else None)
        running: dict = {}
        try:
            while True:
                ready = sorted(((p, j) for p, j in self.ready_jobs() if j.name not in {x.name for x in running.values()}),
                               key=lambda pj: (pj[0], pj[1].name))
                if not ready and not running:
                    break
                while ready and len(running) < jobs:
                    _, job = ready.pop(0)
                    args = (self.cfg.recipe, self.job_overrides(job), str(self.out / "runs" / job.name),
                            str(self.out / "logs" / f"{job.name}.log"))
                    print(f"[study] start {job.name} ({job.steps} steps)", flush=True)
                    if self.launch:
                        self._finish(job, lambda: launch_job(self.launch, *args))
                    elif pool is None:
                        self._finish(job, lambda: run_job(*args))
                    else:
                        running[pool.submit(run_job, *args)] = job
                if not running:  # sequential: the runs above are done; plan again
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finish(running.pop(fut), fut.result)
                if time.time() - last_report > report_every:
                    self.report(time.time() - start)
                    last_report = time.time()
        except BaseException:  # killed or interrupted: stop the runs in flight too (they rerun on resume)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # stdlib-private, hence getattr
                proc.terminate()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.report(time.time() - start)

    def _finish(self, job: Job, get) -> None:
        try:
            info = get()
            self.check_flops(job)
        except Exception as e:  # recorded and reported; the rest of the study goes on
            self.failed[job.name] = f"{type(e).__name__}: {e}"
            print(f"[study] FAILED {job.name}: {e} (log: {self.out / 'logs' / (job.name + '.log')})", flush=True)
            return
        self.results[job.name] = info
        print(f"[study] done {job.name}: eval loss {info.get('final_eval_loss'):.4f} in {info['study_wall_s']:.0f} s "
              f"({len(self.results)} runs done)", flush=True)

    # -- analysis ------------------------------------------------------------------------------
    def analysis(self) -> dict:
        cells = []
        for arm, budget, _ in self.cells():
            steps = self.steps(arm, budget)
            losses, todo, final = self.sweep_state(arm, budget)
            best, edge = pick_lr(losses)
            seeds = {}
            if best is not None:
                for s in range(self.cfg.seeds):
                    v = self.loss(Job(arm.label, budget, best, s, steps))
                    if v is not None:
                        seeds[s] = v
            walls = [self.results[n].get("study_wall_s") or 0 for n in self.results if n.startswith(f"{arm.label}-b{budget:g}-")]
            cells.append({"arm": arm.label, "fixed": arm.fixed, "budget": budget, "steps": steps,
                          "flops": self.planned_flops(arm, steps), "budget_flops": self.budget_flops(budget),
                          "lr_sweep": {f"{lr:g}": l for lr, l in sorted(losses.items())}, "grid_final": final,
                          "best_lr": best, "lr_at_edge": edge if final else None, "seed_losses": seeds,
                          "complete": final and len(seeds) == self.cfg.seeds, "wall_s": sum(walls)})
        main = [c for c in cells if not c["arm"].startswith("init_")]
        per_budget = {}
        for c in main:
            if c["fixed"]:
                per_budget.setdefault(c["budget"], {})[c["arm"]] = list(c["seed_losses"].values())
        front = frontier(per_budget)
        rows = []
        for b in self.cfg.budgets:
            if b not in front:
                continue
            flabel, fvals = front[b]
            for c in main:
                if c["budget"] == b and not c["fixed"] and c["seed_losses"]:
                    vals = list(c["seed_losses"].values())
                    rows.append({"budget": b, "arm": c["arm"], "frontier_arm": flabel, "n": len(vals), "n_frontier": len(fvals),
                                 "mean": mean_std(vals)[0], "std": mean_std(vals)[1],
                                 "frontier_mean": mean_std(fvals)[0], "frontier_std": mean_std(fvals)[1],
                                 **compare_to(vals, fvals)})
        # The largest budget with a frontier (all of them once the study is complete).
        top = max(front) if front else max(self.cfg.budgets)
        reach = {}
        if top in front:
            target = mean_std(front[top][1])[0]
            for label in {c["arm"] for c in main}:
                curve = [(c["flops"], mean_std(list(c["seed_losses"].values()))[0]) for c in main
                         if c["arm"] == label and c["seed_losses"]]
                x = flops_to_reach(curve, target) if curve else None
                reach[label] = {"flops": x, "fraction_of_top_budget": x / self.budget_flops(top) if x else None}
        inits = []
        init_budget = self.cfg.init_budget()
        ref_cell = next((c for c in cells if c["arm"] == self.cfg.ref_arm and c["budget"] == init_budget), None)
        for c in [ref_cell] + [c for c in cells if c["arm"].startswith("init_")]:
            if c and c["seed_losses"]:
                vals = list(c["seed_losses"].values())
                row = {"arm": c["arm"] if c is not ref_cell else "init_copy", "best_lr": c["best_lr"], "n": len(vals),
                       "mean": mean_std(vals)[0], "std": mean_std(vals)[1]}
                if c is not ref_cell and ref_cell["seed_losses"]:
                    row["vs_copy"] = compare_to(vals, list(ref_cell["seed_losses"].values()))
                inits.append(row)
        return {"reference_flops": self.ref_flops, "reference": f"{self.cfg.ref_arm} over {self.cfg.ref_steps} steps",
                "tokens_per_step": self.tokens_per_step, "seq_len": self.seq_len, "vocab": self.vocab,
                "train_blocks": self.train_blocks, "budgets": list(self.cfg.budgets), "inits_budget": self.cfg.init_budget(), "lr_grid": list(self.cfg.lrs),
                "seeds": self.cfg.seeds, "cells": cells,
                "frontier": {f"{b:g}": {"arm": l, "mean": mean_std(v)[0], "std": mean_std(v)[1], "n": len(v)}
                             for b, (l, v) in front.items()},
                "vs_frontier": rows,
                "flops_to_reach_top_frontier": {"budget": top, "frontier_arm": front[top][0] if top in front else None,
                                                "target": mean_std(front[top][1])[0] if top in front else None,
                                                "arms": reach},
                "inits": inits, "failed": self.failed}

    def report(self, wall: float) -> dict:
        a = self.analysis()
        walls = self.out / "study_wall.json"
        history = json.loads(walls.read_text()) if walls.exists() else {}
        history[str(os.getpid())] = wall  # one entry per invocation
        walls.write_text(json.dumps(history) + "\n")
        a["wall_s_invocations"] = sum(history.values())
        a["run_wall_s_total"] = sum((i.get("study_wall_s") or 0) for i in self.results.values())
        a["runs_finished"] = len(self.results)
        (self.out / "study.json").write_text(json.dumps(a, indent=2) + "\n")
        (self.out / "study.md").write_text(markdown(a))
        try:
            plot(a, self.out)
        except Exception as e:  # a plot problem must not lose the tables
            print(f"[study] plot failed: {e}", flush=True)
        print(f"[study] report: {len(self.results)} runs, {len(self.failed)} failed; wrote {self.out / 'study.md'}", flush=True)
        return a


# ---------------------------------------------------------------------------------------------
# Report


def _pm(mean, std, n) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.4f} ± {std:.4f} (n={n})" if std is not None else f"{mean:.4f} (n={n})"


def markdown(a: dict) -> str:
    L = [f"Reference budget: {a['reference_flops']:.4g} training FLOPs ({a['reference']}); "
         f"{a['tokens_per_step']} tokens per step ({a['seq_len']}-token blocks); vocabulary {a['vocab']}. "
         f"LR grid {a['lr_grid']} (x2 / ÷2 extensions where the best was at an edge); LR picked on seed 0, "
         f"then seeds up to {a['seeds'] - 1} at that LR. Losses: final validation loss, mean ± sample std over seeds. "
         "A difference within 2 pooled std is a tie.", "",
         "## Per budget: fixed-depth frontier vs growth", "",
         "| budget | FLOPs | arm | steps | best LR | final eval loss | vs frontier (diff, 2 pooled std) | verdict |",
         "|---|---|---|---|---|---|---|---|"]
    front = a["frontier"]
    for b in a["budgets"]:
        for c in [c for c in a["cells"] if c["budget"] == b and not c["arm"].startswith("init_")]:
            vals = list(c["seed_losses"].values())
            m, s = mean_std(vals) if vals else (None, None)
            f = front.get(f"{b:g}")
            star = " **(frontier)**" if f and f["arm"] == c["arm"] else ""
            cmp = next((r for r in a["vs_frontier"] if r["budget"] == b and r["arm"] == c["arm"]), None)
            diff = (f"{cmp['diff']:+.4f} ({2 * cmp['pooled_std']:.4f})" if cmp and cmp["pooled_std"] is not None
                    else f"{cmp['diff']:+.4f}" if cmp else "")
            lr = f"{c['best_lr']:g}" + (f" (edge: {c['lr_at_edge']})" if c["lr_at_edge"] else "") if c["best_lr"] else "n/a"
            L.append(f"| {b:g} | {c['flops']:.3g} | {c['arm']}{star} | {c['steps']} | {lr} | {_pm(m, s, len(vals))} | {diff} | "
                     f"{cmp['verdict'] if cmp else ''} |")
    reach = a["flops_to_reach_top_frontier"]
    target = f"{reach['target']:.4f} ({reach['frontier_arm']} at budget {reach['budget']:g})" if reach["target"] else "none yet"
    L += ["", "## FLOPs to reach the frontier's loss at the largest budget", "",
          f"Target: {target}. From each arm's budget curve (mean final loss at each budget), "
          "interpolated linearly in log FLOPs between budgets, never extrapolated.", "",
          "| arm | FLOPs | share of the largest budget |", "|---|---|---|"]
    for label, r in sorted(a["flops_to_reach_top_frontier"]["arms"].items()):
        L.append(f"| {label} | {r['flops']:.3g} | {r['fraction_of_top_budget']:.3f} |" if r["flops"] else f"| {label} | not reached | |")
    L += ["", f"## Inits at budget {a['inits_budget']:g} (reference schedule, LR tuned per init)", "",
          "| init | best LR | final eval loss | vs copy (diff, 2 pooled std) | verdict |", "|---|---|---|---|---|"]
    for r in a["inits"]:
        v = r.get("vs_copy")
        d = f"{v['diff']:+.4f} ({2 * v['pooled_std']:.4f})" if v and v["pooled_std"] is not None else ""
        L.append(f"| {r['arm']} | {r['best_lr']:g} | {_pm(r['mean'], r['std'], r['n'])} | {d} | {v['verdict'] if v else ''} |")
    L += ["", "## LR sweeps (seed 0, final eval loss)", "", "| arm | budget | " + "LR: loss |", "|---|---|---|"]
    for c in a["cells"]:
        L.append(f"| {c['arm']} | {c['budget']:g} | " + ", ".join(
            f"{lr}: {l:.4f}" if l is not None else f"{lr}: -" for lr, l in c["lr_sweep"].items()) + " |")
    missing = [c for c in a["cells"] if not c["complete"]]
    L += ["", f"Runs finished: {a.get('runs_finished')}; summed run wall time {a.get('run_wall_s_total', 0):.0f} s; "
          f"study wall time over invocations {a.get('wall_s_invocations', 0):.0f} s.",
          f"Incomplete cells (sweep or seeds missing): {len(missing)}" + (": " + ", ".join(
              f"{c['arm']}@{c['budget']:g}" for c in missing) if missing else "."),
          f"Failed runs: {len(a['failed'])}" + ("".join(f"\n- {k}: {v}" for k, v in a["failed"].items()) if a["failed"] else ".")]
    return "\n".join(L) + "\n"


def plot(a: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [c for c in a["cells"] if not c["arm"].startswith("init_") and c["seed_losses"]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    front = sorted((float(b), f["mean"], f["std"] or 0) for b, f in a["frontier"].items())
    if front:
        xs = [b * a["reference_flops"] for b, _, _ in front]
        ax.plot(xs, [m for _, m, _ in front], "k-", lw=3, alpha=0.35, label="fixed-depth frontier (best depth per budget)")
    labels = sorted({c["arm"] for c in main}, key=lambda l: (not l.startswith("fixed"), l))
    colors = iter(plt.cm.tab10.colors)
    for label in labels:
        cs = sorted((c for c in main if c["arm"] == label), key=lambda c: c["flops"])
        ms = [mean_std(list(c["seed_losses"].values())) for c in cs]
        fixed = label.startswith("fixed")
        ax.errorbar([c["flops"] for c in cs], [m for m, _ in ms], yerr=[s or 0 for _, s in ms], capsize=3,
                    marker="o" if fixed else "s", ls=":" if fixed else "-", lw=1 if fixed else 1.8,
                    color="gray" if fixed else next(colors), alpha=0.6 if fixed else 1, label=label,
                    markersize=4 if fixed else 6)
        if fixed:
            for c, (m, _) in zip(cs, ms):
                ax.annotate(label.split("_")[1], (c["flops"], m), fontsize=7, color="gray", xytext=(3, 2),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (each run trains exactly its budget)")
    ax.set_ylabel("final validation loss (mean ± std over seeds, LR tuned per run)")
    ax.set_title("Growth vs the tuned fixed-depth frontier at equal compute")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)
    if a["inits"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, r in enumerate(a["inits"]):
            ax.errorbar([i], [r["mean"]], yerr=[r["std"] or 0], fmt="o", capsize=4)
        ax.set_xticks(range(len(a["inits"])), [r["arm"] for r in a["inits"]], fontsize=8)
        ax.set_ylabel("final validation loss")
        ax.set_title(f"Init of the new layers at budget {a['inits_budget']:g} (mean ± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "inits.png", dpi=120)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="study directory (default runs/study; with --smoke a temp dir)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (each runs one training run at a time)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help="cpu: the tiny study (recipes/study_tiny.yaml); gpu_125m: the 125M llama frontier "
                        "(recipes/study_gpu_125m.yaml), with --launch")
    p.add_argument("--launch", default=None,
                   help='run each training run as a process under this launcher, one at a time, e.g. '
                        '"accelerate launch --num_processes 8" (default: in-process workers)')
    p.add_argument("--ref_steps", type=int, default=None, help="steps of the reference run that defines budget 1 (default 2000)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm and budget at the picked LR (default 3)")
    p.add_argument("--inits_budget", type=float, default=None,
                   help="budget (one of the study's) at which the inits are compared (default: the largest)")
    p.add_argument("--report_only", action="store_true", help="only write study.json/md and plots from finished runs")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 budgets, 2 depths: the whole pipeline in seconds")
    a = p.parse_args(argv)
    cfg = SMOKE if a.smoke else PRESETS[a.preset] or StudyConfig()
    if a.ref_steps is not None:
        cfg = replace(cfg, ref_steps=a.ref_steps)
    if a.seeds is not None:
        cfg = replace(cfg, seeds=a.seeds)
    if a.inits_budget is not None:
        if a.inits_budget not in cfg.budgets:
            sys.exit(f"error: --inits_budget: must be one of the budgets {list(cfg.budgets)}, got {a.inits_budget}")
        cfg = replace(cfg, inits_budget=a.inits_budget)
    for name, v in (("--jobs", a.jobs), ("--ref_steps", cfg.ref_steps), ("--seeds", cfg.seeds)):
        if v < 1:
            sys.exit(f"error: {name}: must be at least 1, got {v}")
    if a.smoke and a.out is None:
        import tempfile

        a.out = tempfile.mkdtemp(prefix="study_smoke_")
    out = Path(a.out or "runs/study").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill PID` stops the workers as well
    study = Study(out, cfg, shlex.split(a.launch) if a.launch else None)
    study.prepare()
    if a.report_only:
        study.load_finished()
        study.report(0.0)
        return
    study.run(jobs=1 if a.smoke else a.jobs)
    if study.failed:
        sys.exit(f"error: {len(study.failed)} run(s) failed: {', '.join(study.failed)}")


if __name__ == "__main__":
    main()
