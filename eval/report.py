"""Arithmetic behind the loss-versus-compute report: interpolation on loss curves, matched-loss
compute, seed aggregation and the seed-spread test. No I/O; `eval/compare.py` does the reading,
plotting and writing.

Conventions, used by every function here:
- A curve is two equal-length sequences `xs` (nondecreasing: FLOPs, tokens or seconds) and `ys`
  (a loss), one point per evaluation.
- Between two adjacent points the curve is the straight line in linear x (not log x): the eval
  points of one run are close together compared to the jumps in loss we care about, and linear x
  keeps "FLOPs to reach the target" exactly the x at which the plotted polyline crosses it.
- Nothing is extrapolated: outside [xs[0], xs[-1]] a value is None ("n/a" / "not reached").
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


def _check_curve(xs: Sequence[float], ys: Sequence[float]) -> None:
    if len(xs) != len(ys):
        raise ValueError(f"curve has {len(xs)} x values but {len(ys)} y values")
    for i in range(1, len(xs)):
        if xs[i] < xs[i - 1]:
            raise ValueError(f"curve x values must be nondecreasing, got x[{i - 1}]={xs[i - 1]} > x[{i}]={xs[i]}")


def value_at(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """y of the piecewise-linear curve at `x`; None if `x` lies outside the curve's x range.

    Where several points share the x (e.g. two evals at the same FLOPs) the first one is used.
    """
    _check_curve(xs, ys)
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for i in range(len(xs)):
        if xs[i] == x:
            return float(ys[i])
        if xs[i] > x:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    raise AssertionError("unreachable: x is within [xs[0], xs[-1]]")


def first_reach(xs: Sequence[float], ys: Sequence[float], target: float) -> float | None:
    """Smallest x at which the piecewise-linear curve gets down to `target` (y <= target).

    None if no point and no segment reaches it ("not reached"). If the first point is already at
    or below the target the answer is xs[0]: it was reached at the latest there and we do not guess
    about the unevaluated part before it.
    """
    _check_curve(xs, ys)
    for i in range(len(xs)):
        if ys[i] <= target:
            if i == 0:
                return float(xs[0])
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            # y0 > target >= y1 here, so y0 != y1 and the fraction lies in (0, 1].
            return float(x0 + (x1 - x0) * (y0 - target) / (y0 - y1))
    return None


@dataclass(frozen=True)
class Spread:
    """Aggregate of one quantity over the seeds of a label.

    `n` counts the seeds with a value; `missing` those without (e.g. "not reached"). `mean`,
    `std` (sample std, ddof=1; 0.0 for one value), `min` and `max` are over the `n` values, and
    None when `n` is 0.
    """

    n: int
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


def spread(values: Sequence[float | None]) -> Spread:
    present = [float(v) for v in values if v is not None]
    missing = len(values) - len(present)
    if not present:
        return Spread(0, missing, None, None, None, None)
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return Spread(len(present), missing, statistics.fmean(present), std, min(present), max(present))


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """Pooled sample standard deviation of two groups (each needs at least 2 values)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"pooled std needs at least 2 values per group, got {len(a)} and {len(b)}")
    sa, sb = spread(a), spread(b)
    dof = len(a) + len(b) - 2
    return math.sqrt(((len(a) - 1) * sa.std**2 + (len(b) - 1) * sb.std**2) / dof)


def exceeds_seed_spread(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """The report's criterion for "a real difference between two labels":

        |mean(a) - mean(b)| > 2 * pooled_std(a, b)

    None when either label has fewer than 2 seeds (the spread is unknown). With 2-3 seeds per label
    this is a rough screen, not a significance test.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    return abs(spread(a).mean - spread(b).mean) > 2 * pooled_std(a, b)


def paired_difference(a: dict, b: dict) -> tuple[int, float, float] | None:
    """Per-seed differences b[seed] - a[seed] over the seeds both have: (n, mean, sample std).

    Runs of one seed share their initial weights and batches, so most seed noise cancels in the
    difference; None with fewer than 2 common seeds."""
    seeds = sorted(set(a) & set(b), key=str)
    if len(seeds) < 2:
        return None
    d = [b[s] - a[s] for s in seeds]
    s = spread(d)
    return len(d), s.mean, s.std


def exceeds_paired_noise(a: dict, b: dict) -> bool | None:
    """The paired criterion: every common seed's difference has the same sign and
    |mean difference| > 2 * std of the per-seed differences. A rough screen, like the unpaired one."""
    pd = paired_difference(a, b)
    if pd is None:
        return None
    n, mean, std = pd
    diffs = [b[s] - a[s] for s in set(a) & set(b)]
    same_sign = all(x > 0 for x in diffs) or all(x < 0 for x in diffs)
    return same_sign and abs(mean) > 2 * std


def mean_curve(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Mean of several seeds' curves: (grid, mean, std, min, max).

    Each curve is interpolated onto the union of all curves' x values inside the range every curve
    covers (the overlap), so no seed is extrapolated; std is the sample std (0 for one curve).
    Returns empty lists when the curves do not overlap.
    """
    if not curves:
        raise ValueError("mean_curve needs at least one curve")
    for xs, ys in curves:
        _check_curve(xs, ys)
    curves = [(xs, ys) for xs, ys in curves]
    if any(not xs for xs, _ in curves):
        return [], [], [], [], []
    lo = max(xs[0] for xs, _ in curves)
    hi = min(xs[-1] for xs, _ in curves)
    grid = sorted({float(x) for xs, _ in curves for x in xs if lo <= x <= hi})
    mean, std, mins, maxs = [], [], [], []
    for x in grid:
        s = spread([value_at(xs, ys, x) for xs, ys in curves])
        mean.append(s.mean)
        std.append(s.std)
        mins.append(s.min)
        maxs.append(s.max)
    return grid, mean, std, mins, maxs


@dataclass(frozen=True)
class Jump:
    """Loss right before and right after a growth event at optimizer step `step`.

    `jump = after - before`; either side is None when nothing was logged there. The *_step fields
    give the steps used: a logged training loss is a mean over the logging interval, so the jump is
    sharp only with a short interval.
    """

    step: int
    before: float | None
    after: float | None
    jump: float | None
    before_step: int | None
    after_step: int | None


def loss_jump(steps: Sequence[int], losses: Sequence[float], step: int, step_is_after: bool = False) -> Jump:
    """before: the last value logged before the growth; after: the first value logged after it.

    A value logged at `step` itself counts as before by default (a training loss logged at the
    growth step was computed by the old model) and as after with `step_is_after` (an eval at the
    growth step runs on the grown model).
    """
    _check_curve(steps, losses)
    is_before = (lambda s: s < step) if step_is_after else (lambda s: s <= step)
    before = [(s, v) for s, v in zip(steps, losses) if is_before(s)]
    after = [(s, v) for s, v in zip(steps, losses) if not is_before(s)]
    b = before[-1] if before else (None, None)
    a = after[0] if after else (None, None)
    jump = a[1] - b[1] if before and after else None
    return Jump(step, b[1], a[1], jump, b[0], a[0])


@dataclass(frozen=True)
class RunResult:
    """Matched-compute numbers of one run against a baseline.

    target_loss: the baseline's final eval loss (mean over its seeds).
    baseline_flops: the baseline's FLOPs at that final eval (mean over its seeds), i.e. what the
    baseline paid to reach `target_loss`.
    """

    final_eval_loss: float | None
    final_eval_flops: float | None
    total_flops: float | None
    flops_to_target: float | None
    flops_saved_pct: float | None
    loss_at_baseline_flops: float | None


def run_result(
    flops: Sequence[float],
    eval_losses: Sequence[float],
    total_flops: float | None,
    target_loss: float | None,
    baseline_flops: float | None,
) -> RunResult:
    """flops/eval_losses: the run's eval curve in training FLOPs. target_loss and baseline_flops
    may be None (no baseline), which leaves the matched numbers None."""
    _check_curve(flops, eval_losses)
    final = float(eval_losses[-1]) if eval_losses else None
    final_x = float(flops[-1]) if flops else None
    to_target = first_reach(flops, eval_losses, target_loss) if target_loss is not None else None
    saved = None
    if to_target is not None and baseline_flops:
        saved = 100.0 * (1.0 - to_target / baseline_flops)
    at_base = value_at(flops, eval_losses, baseline_flops) if baseline_flops is not None else None
    return RunResult(final, final_x, total_flops, to_target, saved, at_base)
