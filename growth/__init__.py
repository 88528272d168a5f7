"""Gradual depth growth (stacking) for HF causal language models."""

from .families import FAMILIES, family_of
from .grow import current_depth, grow, plan
from .operators import OPERATORS, interleave, make_mapping, stack_all, stack_last, stack_middle
from .optim import STATE_POLICIES, add_parameters
from .surgery import INITS, grow_layers, parameter_sources

__all__ = [
    "FAMILIES", "INITS", "OPERATORS", "STATE_POLICIES", "add_parameters", "current_depth", "family_of",
    "grow", "grow_layers", "interleave", "make_mapping", "parameter_sources", "plan", "stack_all",
    "stack_last", "stack_middle",
]
