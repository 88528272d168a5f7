"""What to grow, how and when: the growth section of a recipe (framework-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .operators import OPERATORS
from .optim import check_state_policy
from .schedule import GrowthSchedule
from .surgery import check_init


@dataclass
class GrowthConfig:
    schedule: GrowthSchedule | dict | None = field(
        default=None, metadata={"help": "when to grow: {initial_depth, unit, points: [[point, depth], ...]} or "
                                        "{kind: equal|prop_alpha, depths: [...], alpha, unit}; None = no growth"})
    operator: str = field(default="stack_last", metadata={"help": "stack_last | stack_middle | stack_all | interleave"})
    init: str = field(default="copy", metadata={"help": "new layers: copy | scaled_copy | zero | random"})
    beta: float = field(default=1.0, metadata={"help": "scaled_copy: factor on the copies' residual-branch outputs"})
    block: int | None = field(default=None, metadata={"help": "stack_last/stack_middle: layers per copied block (default: as many as are added)"})
    optimizer_state: str = field(default="copy", metadata={"help": "new parameters' optimizer state: copy | zero | fresh"})
    rewarmup_steps: int = field(default=0, metadata={"help": "after each growth, ramp the LR linearly from 0 back to the schedule's value over this many steps"})

    def __post_init__(self):
        if isinstance(self.schedule, dict):
            try:
                self.schedule = GrowthSchedule.from_dict(self.schedule)
            except ValueError as e:
                raise ValueError(f"growth.schedule.{e}") from None
        if self.operator not in OPERATORS:
            raise ValueError(f"growth.operator: unknown operator {self.operator!r}; choose one of {', '.join(OPERATORS)}")
        try:
            check_init(self.init, self.beta)
            check_state_policy(self.optimizer_state)
        except ValueError as e:
            raise ValueError(f"growth.{e}") from None
        if self.block is not None and (self.block < 1 or self.operator in ("stack_all", "interleave")):
            raise ValueError(f"growth.block: {self.block} is not valid for operator {self.operator!r} (positive, stack_last/stack_middle only)")
        if self.rewarmup_steps < 0:
            raise ValueError(f"growth.rewarmup_steps must be >= 0, got {self.rewarmup_steps}")

    @property
    def enabled(self) -> bool:
        return self.schedule is not None and len(self.schedule.points) > 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["schedule"] = self.schedule.to_dict() if self.schedule is not None else None
        return d
