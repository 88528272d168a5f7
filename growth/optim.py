"""Optimizer-state transfer for torch optimizers after growth.

New parameters join the param group of their source (decay / no-decay and any custom groups
keep their hyper-parameters); old parameters' state is never touched. Works for any optimizer
whose per-parameter state is a dict of tensors (AdamW, Adam, SGD with momentum, Adafactor...).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import nn

STATE_POLICIES = ("copy", "zero", "fresh")


def check_state_policy(policy: str) -> None:
    if policy not in STATE_POLICIES:
        raise ValueError(f"optimizer_state: unknown policy {policy!r}; choose one of {', '.join(STATE_POLICIES)}")


def new_state(source_state: dict, param: torch.Tensor, policy: str) -> dict:
    """State for a new parameter from its source's state under ``policy``.

    ``copy``: every entry cloned (moments and step). ``zero``: entries shaped like the parameter
    (moments) zeroed, the rest (step) cloned, so bias correction stays that of its neighbours.
    ``fresh``: empty, exactly what a newly built optimizer holds before its first step.
    """
    if policy == "fresh" or not source_state:
        return {}
    out = {}
    for key, value in source_state.items():
        if not torch.is_tensor(value):
            out[key] = copy.deepcopy(value)
        elif policy == "zero" and value.shape == param.shape:
            out[key] = torch.zeros_like(value)
        else:
            out[key] = value.clone()
    return out


@torch.no_grad()
def add_parameters(
    optimizer: torch.optim.Optimizer,
    new_params: Sequence[tuple[nn.Parameter, nn.Parameter | None, nn.Parameter]],
    policy: str = "copy",
    order: Iterable[nn.Parameter] | None = None,
) -> None:
    """Register new parameters with ``optimizer``.

    ``new_params`` holds ``(new, source, group_reference)``: ``source`` gives the state (``None``
    for a fresh layer: ``copy`` then falls back to ``zero`` from the reference, so the step count
    matches its group); ``group_reference`` is an old parameter whose param group the new one joins.
    ``order`` (the grown model's parameters) re-sorts each group so that it matches what a new
    optimizer built on the grown model would hold: optimizer checkpoints then resume by index.
    """
    check_state_policy(policy)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for new, source, reference in new_params:
        if id(reference) not in group_of:
            raise ValueError("growth: a reference parameter is not in the optimizer; was the optimizer built on this model?")
        group_of[id(reference)]["params"].append(new)
        donor = source if source is not None else reference
        effective = policy if source is not None or policy == "fresh" else "zero"
        state = new_state(optimizer.state.get(donor, {}), new, effective)
        if state:
            optimizer.state[new] = state
    if order is not None:
        rank = {id(p): i for i, p in enumerate(order)}
        for g in optimizer.param_groups:
            # sorted() is stable: parameters outside the model keep their relative order at the end.
            g["params"] = sorted(g["params"], key=lambda p: rank.get(id(p), len(rank)))
