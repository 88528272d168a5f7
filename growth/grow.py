"""``grow``: the public entry point of the growth core (no Trainer or DeepSpeed involved)."""

from __future__ import annotations

import torch
from torch import nn

from .families import family_of
from .operators import make_mapping, original_positions
from .optim import add_parameters, check_state_policy
from .surgery import check_init, grow_layers


def current_depth(model: nn.Module) -> int:
    return len(family_of(model).layers(model))


def plan(model: nn.Module, depth: int, operator: str = "stack_last", init: str = "copy", block: int | None = None) -> list:
    """The mapping ``grow`` would apply, without touching the model (``None``: fresh layer)."""
    check_init(init, 1.0)
    old_depth = current_depth(model)
    mapping = make_mapping(operator, old_depth, depth, block)
    if init == "random":
        keep = set(original_positions(mapping, old_depth))
        mapping = [src if i in keep else None for i, src in enumerate(mapping)]
    return mapping


def grow(
    model: nn.Module,
    depth: int,
    operator: str = "stack_last",
    init: str = "copy",
    optimizer: torch.optim.Optimizer | None = None,
    *,
    beta: float = 1.0,
    block: int | None = None,
    optimizer_state: str = "copy",
) -> list:
    """Grow a HF causal LM in place to ``depth`` layers, and its optimizer when one is given.

    Args:
        operator: ``stack_last`` (gradual stacking), ``stack_middle`` (MIDAS), ``stack_all``
            (progressive stacking / G_stack) or ``interleave``; ``block`` sets how many layers
            stack_last / stack_middle copy (default: as many as are added, at most the depth).
        init: ``copy``, ``scaled_copy`` (residual-branch output projections times ``beta``: the
            momentum-beta reading of stacking), ``zero`` (those projections zeroed: same function)
            or ``random`` (the model's own initialisation).
        optimizer_state: ``copy`` / ``zero`` / ``fresh`` state for the new parameters.

    Returns the mapping: for each new layer, the old layer it copies or ``None``.
    """
    check_state_policy(optimizer_state)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    family = family_of(model)
    mapping = plan(model, depth, operator, init, block)
    if optimizer is not None:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, p in family.layers(model).named_parameters() if p.requires_grad and id(p) not in known]
        if missing:  # checked before any surgery, so a bad call leaves model and optimizer as they were
            raise ValueError(f"optimizer: block parameters {missing[:3]} are not in the optimizer; build it on this model")
    old = list(family.layers(model))
    added = grow_layers(model, mapping, init, beta)
    if optimizer is not None:
        layers = family.layers(model)
        new_params = []
        for i, src in added:
            for name, p in layers[i].named_parameters():
                source = old[src].get_parameter(name) if src is not None else None
                new_params.append((p, source, old[0].get_parameter(name)))
        add_parameters(optimizer, new_params, optimizer_state, order=model.parameters())
    return mapping
