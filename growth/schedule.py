"""Growth schedules: the depth in force at any point of a run, as a pure function.

A schedule is an initial depth and a list of (point, target depth) growth points in one unit:
"steps" (optimizer steps completed), "tokens" (training tokens seen), "flops" (training FLOPs
spent) or "fraction" (of max_steps). The depth at a point depends on nothing but the schedule,
so a resumed run lands at the right depth. `to_steps` turns any unit into step numbers once
the run's length, batch size and per-token cost are known.

    schedule = GrowthSchedule(initial_depth=2, points=((0.25, 4), (0.5, 6)), unit="fraction")
    schedule.to_steps(max_steps=1000).points       # ((250, 4), (500, 6))
    GrowthSchedule.prop_alpha([2, 4, 6], alpha=1)   # stages of 1/6, 2/6 and 3/6 of the run
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Sequence

UNITS = ("steps", "tokens", "flops", "fraction")

# A product such as 0.3 * 10 = 3.0000000000000004 is step 3, not step 4.
_FLOAT_NOISE = 1e-9


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _check_depths(name: str, depths: Sequence[int]) -> None:
    """Depth list of the generated forms: depths[0] is the initial depth, strictly increasing."""
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or len(depths) == 0:
        raise ValueError(f"{name}: must be a non-empty list of depths, got {depths!r}")
    for i, depth in enumerate(depths):
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise ValueError(
                f"{name}[{i}]: depth {depth!r} is not an integer (layer counts are never rounded)"
            )
        if depth < 1:
            raise ValueError(f"{name}[{i}]: depth must be a positive integer, got {depth}")
        if i > 0 and depth <= depths[i - 1]:
            raise ValueError(
                f"{name}[{i}]: depth {depth} is not larger than the previous depth {depths[i - 1]}"
            )


def _first_step_reaching(position: float) -> int:
    """Smallest integer step s with s >= position, treating float noise as exact."""
    nearest = round(position)
    if abs(position - nearest) <= _FLOAT_NOISE * max(1.0, abs(position)):
        return int(nearest)
    return math.ceil(position)


@dataclass(frozen=True)
class GrowthSchedule:
    """Depth `initial_depth` until the first point, then each target depth from its point on.

    `points` are (point, target depth) pairs in `unit`, strictly increasing in both. Growth at
    point p applies for every point >= p. In "steps", point s means: after s optimizer steps
    have completed, i.e. from the step with 0-based index s (Trainer's state.global_step == s).
    """

    initial_depth: int
    points: tuple[tuple[float, int], ...]
    unit: str = "steps"

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit: {self.unit!r} is not one of {', '.join(UNITS)}")
        if isinstance(self.initial_depth, bool) or not isinstance(self.initial_depth, numbers.Integral):
            raise ValueError(
                f"initial_depth: {self.initial_depth!r} is not an integer "
                "(layer counts are never rounded)"
            )
        if self.initial_depth < 1:
            raise ValueError(f"initial_depth: must be a positive integer, got {self.initial_depth}")
        if isinstance(self.points, (str, bytes, Mapping)) or not isinstance(self.points, Sequence):
            raise ValueError(f"points: must be a list of (point, depth) pairs, got {self.points!r}")
        points = []
        previous_point, previous_depth = None, int(self.initial_depth)
        for i, entry in enumerate(self.points):
            name = f"points[{i}]"
            if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
                raise ValueError(f"{name}: expected a (point, target depth) pair, got {entry!r}")
            point, depth = self._check_point(name, entry[0]), entry[1]
            if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
                raise ValueError(
                    f"{name}: target depth {depth!r} is not an integer (layer counts are never rounded)"
                )
            if depth <= previous_depth:
                raise ValueError(
                    f"{name}: target depth {depth} is not larger than the previous depth {previous_depth}"
                )
            if previous_point is not None and point <= previous_point:
                raise ValueError(
                    f"{name}: point {point} is not larger than the previous point {previous_point}"
                )
            points.append((point, int(depth)))
            previous_point, previous_depth = point, int(depth)
        # Tuples keep the frozen dataclass hashable and comparable whatever sequence came in.
        object.__setattr__(self, "initial_depth", int(self.initial_depth))
        object.__setattr__(self, "points", tuple(points))

    def _check_point(self, name: str, point) -> float | int:
        if not _is_real(point):
            raise ValueError(f"{name}: point {point!r} is not a finite number")
        if self.unit == "fraction":
            if point <= 0:
                raise ValueError(
                    f"{name}: point {point} is not after the start of the run "
                    "(fraction must be in (0, 1); the depth at the start is initial_depth)"
                )
            if point >= 1:
                where = "at" if point == 1 else "past"
                raise ValueError(
                    f"{name}: point {point} is {where} the end of the run (fraction must be in (0, 1))"
                )
            return float(point)
        if point <= 0:
            raise ValueError(
                f"{name}: point {point} is not after the start of the run "
                "(must be > 0; the depth at the start is initial_depth)"
            )
        if self.unit == "steps":
            if point != int(point):
                raise ValueError(
                    f"{name}: step {point} is not an integer "
                    "(use unit 'fraction' or 'tokens' and to_steps() to convert)"
                )
            return int(point)
        return float(point)

    def depth_at(self, point: float) -> int:
        """Depth in force at `point` (in this schedule's unit)."""
        depth = self.initial_depth
        for growth_point, target in self.points:
            if point < growth_point:
                break
            depth = target
        return depth

    @property
    def final_depth(self) -> int:
        return self.points[-1][1] if self.points else self.initial_depth

    def validate(self, max_depth: int | None = None) -> "GrowthSchedule":
        """Reject depths above a model limit (e.g. the number of layers a recipe allows)."""
        if max_depth is None:
            return self
        max_depth = _positive_int("max_depth", max_depth)
        if self.initial_depth > max_depth:
            raise ValueError(f"initial_depth: {self.initial_depth} is above max_depth {max_depth}")
        for i, (_, depth) in enumerate(self.points):
            if depth > max_depth:
                raise ValueError(f"points[{i}]: target depth {depth} is above max_depth {max_depth}")
        return self

    def to_steps(
        self,
        max_steps: int,
        tokens_per_step: int | None = None,
        flops_per_token: Callable[[int], float] | None = None,
    ) -> "GrowthSchedule":
        """The equivalent schedule in "steps", for a run of `max_steps` optimizer steps.

        Growth at point p lands on the first step whose start has reached p, so the returned
        schedule gives at every step s the depth this one gives where step s starts:
          fraction: step s starts at s / max_steps           -> ceil(p * max_steps)
          tokens:   step s starts at s * tokens_per_step      -> ceil(p / tokens_per_step)
          flops:    step s starts at the FLOPs of steps 0..s-1, each costing
                    flops_per_token(depth in force) * tokens_per_step, so a stage at depth d
                    advances by that cost per step and the next point is reached after
                    ceil((p - flops so far) / cost) more steps.
        Values within 1e-9 (relative) of an integer count as that integer (0.3 * 10 is step 3).
        `flops_per_token(depth)` is training FLOPs per token at `depth`, e.g.
        functools.partial(growth.flops.training_flops_per_token, config, seq_len).

        Raises ValueError naming the entry when a point lands at step 0, at or past max_steps
        (the new layers would never train) or on the same step as the previous point.
        """
        max_steps = _positive_int("max_steps", max_steps)
        if self.unit in ("tokens", "flops"):
            if tokens_per_step is None:
                raise ValueError(f"tokens_per_step: required to convert a schedule in {self.unit}")
            tokens_per_step = _positive_int("tokens_per_step", tokens_per_step)
        if self.unit == "flops" and flops_per_token is None:
            raise ValueError("flops_per_token: required to convert a schedule in flops")

        steps = []
        done_steps, done_flops, depth = 0, 0.0, self.initial_depth
        for i, (point, target) in enumerate(self.points):
            if self.unit == "steps":
                step = point
            elif self.unit == "fraction":
                step = _first_step_reaching(point * max_steps)
            elif self.unit == "tokens":
                step = _first_step_reaching(point / tokens_per_step)
            else:
                cost = flops_per_token(depth) * tokens_per_step
                if not (_is_real(cost) and cost > 0):
                    raise ValueError(
                        f"flops_per_token: must return a positive number, got {cost!r} at depth {depth}"
                    )
                step = done_steps + max(0, _first_step_reaching((point - done_flops) / cost))
                done_flops += (step - done_steps) * cost
                done_steps, depth = step, target

            where = f"points[{i}]: {point} {self.unit}"
            if step < 1:
                raise ValueError(f"{where} lands at step 0 (the depth at the start is initial_depth)")
            if step >= max_steps:
                raise ValueError(
                    f"{where} lands at step {step}, which is not before max_steps {max_steps} "
                    "(the new layers would never train)"
                )
            if steps and step == steps[-1]:
                raise ValueError(
                    f"{where} lands on step {step}, the same step as points[{i - 1}]"
                )
            steps.append(step)
        return GrowthSchedule(
            initial_depth=self.initial_depth,
            points=tuple(zip(steps, (depth for _, depth in self.points))),
            unit="steps",
        )

    @classmethod
    def equal_stages(
        cls, depths: Sequence[int], unit: str = "fraction", total: float = 1.0
    ) -> "GrowthSchedule":
        """len(depths) stages of equal length over `total`; depths[0] is the initial depth.

        equal_stages([2, 4, 6, 8]) grows at fractions 0.25, 0.5 and 0.75.
        """
        return cls.prop_alpha(depths, alpha=0.0, unit=unit, total=total)

    @classmethod
    def prop_alpha(
        cls, depths: Sequence[int], alpha: float, unit: str = "fraction", total: float = 1.0
    ) -> "GrowthSchedule":
        """MIDAS's Prop-alpha: stage i (1-based) lasts in proportion to i**alpha.

        Stage i ends at total * sum(j**alpha, j <= i) / sum(j**alpha, j <= n) for n stages;
        alpha=0 gives equal stages, alpha=1 with 3 stages gives 1/6, 2/6, 3/6 of `total`.
        """
        _check_depths("depths", depths)
        if not _is_real(alpha):
            raise ValueError(f"alpha: must be a finite number, got {alpha!r}")
        if not (_is_real(total) and total > 0):
            raise ValueError(f"total: must be a positive number, got {total!r}")
        weights = [float(i) ** alpha for i in range(1, len(depths) + 1)]
        ends, cumulative = [], 0.0
        for weight in weights[:-1]:
            cumulative += weight
            ends.append(total * cumulative / sum(weights))
        return cls(initial_depth=depths[0], points=tuple(zip(ends, depths[1:])), unit=unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "initial_depth": self.initial_depth,
            "unit": self.unit,
            "points": [[point, depth] for point, depth in self.points],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GrowthSchedule":
        """Build from a recipe mapping, explicit or generated:

            {"initial_depth": 2, "unit": "fraction", "points": [[0.25, 4], [0.5, 6]]}
            {"kind": "equal", "depths": [2, 4, 6], "unit": "fraction", "total": 1.0}
            {"kind": "prop_alpha", "depths": [2, 4, 6], "alpha": 1.0}

        In the generated forms depths[0] is the initial depth; "initial_depth" may be given too
        but must then equal depths[0]. "unit" defaults to "steps" for the explicit form and to
        "fraction" for the generated forms (as in the constructors).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"schedule: expected a mapping, got {d!r}")
        kind = d.get("kind")
        if kind is None:
            _check_keys(d, required=("initial_depth", "points"), optional=("unit",))
            return cls(initial_depth=d["initial_depth"], points=d["points"], unit=d.get("unit", "steps"))
        if kind == "equal":
            _check_keys(d, required=("kind", "depths"), optional=("unit", "total", "initial_depth"))
        elif kind == "prop_alpha":
            _check_keys(d, required=("kind", "depths", "alpha"), optional=("unit", "total", "initial_depth"))
        else:
            raise ValueError(f"kind: {kind!r} is not one of equal, prop_alpha")
        depths = d["depths"]
        _check_depths("depths", depths)
        if "initial_depth" in d and d["initial_depth"] != depths[0]:
            raise ValueError(
                f"initial_depth: {d['initial_depth']!r} does not match depths[0] {depths[0]!r} "
                "(in the generated forms depths[0] is the initial depth)"
            )
        unit, total = d.get("unit", "fraction"), d.get("total", 1.0)
        if kind == "equal":
            return cls.equal_stages(depths, unit=unit, total=total)
        return cls.prop_alpha(depths, alpha=d["alpha"], unit=unit, total=total)


def _check_keys(d: Mapping[str, Any], required: Sequence[str], optional: Sequence[str]) -> None:
    missing = [key for key in required if key not in d]
    if missing:
        raise ValueError(f"schedule: missing key(s) {', '.join(missing)}")
    unknown = [key for key in d if key not in required and key not in optional]
    if unknown:
        raise ValueError(
            f"schedule: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(expected {', '.join((*required, *optional))})"
        )
