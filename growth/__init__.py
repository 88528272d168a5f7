"""Gradual depth growth (stacking) for HF causal language models.

The core (operators, surgery, optimizer state, schedules, FLOPs) imports neither the Trainer nor
DeepSpeed; ``enable_growth`` and ``attach_reporting`` (the Trainer adapters) load on first use.
"""

from .families import FAMILIES, family_of
from .grow import current_depth, grow, plan
from .operators import OPERATORS, interleave, make_mapping, stack_all, stack_last, stack_middle
from .optim import STATE_POLICIES, add_parameters
from .schedule import GrowthSchedule
from .surgery import INITS, grow_layers, parameter_sources

__all__ = [
    "FAMILIES", "INITS", "OPERATORS", "STATE_POLICIES", "GrowthSchedule", "add_parameters", "attach_reporting",
    "current_depth", "enable_growth", "family_of", "grow", "grow_layers", "interleave", "make_mapping",
    "parameter_sources", "plan", "stack_all", "stack_last", "stack_middle",
]


def __getattr__(name):
    if name == "enable_growth":
        from .trainer import enable_growth

        return enable_growth
    if name == "attach_reporting":
        from .reporting import attach_reporting

        return attach_reporting
    raise AttributeError(f"module 'growth' has no attribute {name!r}")
