"""Growth under DeepSpeed ZeRO 1/2/3: the only module that knows DeepSpeed.

DeepSpeed cannot add parameters to an engine after ``initialize``, so a growth event builds the
grown model (partitioned under ZeRO-3 through ``deepspeed.zero.Init``, which transformers applies
in ``from_config``), builds a new engine through the Trainer's own ``_prepare_for_training``, and
then moves the state one parameter at a time by the layer mapping: fp32 master weight and every
optimizer moment are gathered from the old engine and scattered into the new engine's
partitions. No rank ever holds more than one full parameter (plus its moments) beyond the old
and new partitions. Step counters (optimizer, scheduler, engine) continue.

Private DeepSpeed APIs used here are pinned in pyproject.toml and exercised by
tests/test_private_apis.py and the 2-process tests.
"""

from __future__ import annotations

import copy

import torch
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
)

from .families import family_of
from .grow import plan
from .surgery import build_grown, init_factor, kept_parameters, parameter_sources


def flat_partitions(zero_optimizer) -> list[torch.Tensor]:
    """The flat fp32 master partitions that the basic optimizer steps (its state keys)."""
    if hasattr(zero_optimizer, "fp32_partitioned_groups_flat"):  # ZeRO-3
        return list(zero_optimizer.fp32_partitioned_groups_flat)
    if hasattr(zero_optimizer, "fp32_groups_flat_partition"):  # BF16_Optimizer (bf16 with ZeRO-0/1)
        return list(zero_optimizer.fp32_groups_flat_partition)
    return list(zero_optimizer.single_partition_of_fp32_groups)  # ZeRO-1/2


def link_optimizer_state(zero_optimizer) -> None:
    """ZeRO-1/2 (and BF16_Optimizer) link each parameter's optimizer-state fragments lazily, and only for param group 0
    once the state exists; re-link so that every group's states can be read and written."""
    if hasattr(zero_optimizer, "_lazy_init_hp_params_optimizer_state"):
        zero_optimizer._hp_optimizer_states_linked = False
        zero_optimizer._lazy_init_hp_params_optimizer_state()


def moment_keys(zero_optimizer) -> list[str]:
    """Optimizer-state entries shaped like the parameters (exp_avg, exp_avg_sq, ...)."""
    flat = flat_partitions(zero_optimizer)[0]
    state = zero_optimizer.optimizer.state.get(flat, {})
    return [k for k, v in state.items() if torch.is_tensor(v) and v.shape == flat.shape]


def create_optimizer_state(zero_optimizer, keys: list[str], other_entries: list[dict]) -> None:
    """A fresh engine has no optimizer state until its first step: create it (zero moments under
    ``keys``, and per flat group the old group's other entries, i.e. its step) so that it can be
    written before that step."""
    basic = zero_optimizer.optimizer
    for flat, entries in zip(flat_partitions(zero_optimizer), other_entries):
        basic.state[flat] = {**{k: torch.zeros_like(flat) for k in keys}, **copy.deepcopy(entries)}
    link_optimizer_state(zero_optimizer)


def sync_model_weights(zero_optimizer) -> None:
    """Copy the fp32 masters into the (possibly bf16) model parameters, as after a step."""
    if hasattr(zero_optimizer, "update_lp_params"):  # ZeRO-1/2, BF16_Optimizer: partitions, then all-gather
        zero_optimizer.update_lp_params()
        return
    for i in range(len(zero_optimizer.fp16_partitioned_groups_flat)):  # ZeRO-3
        zero_optimizer._reassign_or_swap_out_partitioned_parameters(i)
    if zero_optimizer.persistent_parameters:  # small parameters ZeRO-3 keeps gathered
        zero_optimizer.persistent_parameters[0].all_gather(zero_optimizer.persistent_parameters)
    zero_optimizer.invalidate_secondary_tensor()


def _release(engine) -> None:
    """Free the old engine's memory. The Trainer's loop still holds the old engine in a local
    variable (and calls its zero_grad), so the object stays, emptied."""
    engine.destroy()
    for p in engine.module.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        if hasattr(p, "ds_tensor"):
            p.ds_tensor = torch.empty(0, dtype=p.dtype, device=p.device)
    engine.optimizer = None
    engine.lr_scheduler = None


def _scheduler(trainer):
    return getattr(trainer.lr_scheduler, "scheduler", trainer.lr_scheduler)


@torch.no_grad()
def grow_engine(trainer, depth: int) -> list:
    """Grow the trainer's DeepSpeed-wrapped model to ``depth``; returns the layer mapping."""
    g = trainer.growth_config
    old_engine, old_model = trainer.model_wrapped, trainer.model
    old_opt = old_engine.optimizer
    family = family_of(old_model)
    mapping = plan(old_model, depth, g.operator, g.init, g.block)
    old_depth = len(family.layers(old_model))

    link_optimizer_state(old_opt)
    keys = moment_keys(old_opt)
    old_state = [{k: v for k, v in old_opt.optimizer.state[f].items() if k not in keys} for f in flat_partitions(old_opt)]
    # The Trainer's scheduler (an HF LambdaLR stepped by the Trainer, or DeepSpeed's own inside a wrapper).
    sched_state = _scheduler(trainer).state_dict() if trainer.lr_scheduler is not None else None
    counters = {k: getattr(old_engine, k) for k in ("global_steps", "global_samples", "micro_steps", "skipped_steps")}

    # The grown model, built from its config (ZeRO-3: partitioned at construction by zero.Init).
    new_model = build_grown(old_model, mapping)
    if getattr(old_model, "is_gradient_checkpointing", False):
        new_model.gradient_checkpointing_enable(getattr(old_model, "_gradient_checkpointing_kwargs", None))

    # A new engine through the Trainer's own path (optimizer groups, scheduler, accelerate wrappers).
    acc = trainer.accelerator
    acc.deepspeed_engine_wrapped = None
    for name in ("_models", "_optimizers", "_schedulers"):
        getattr(acc, name).clear()
    trainer.model = trainer.model_wrapped = new_model
    trainer.optimizer = trainer.lr_scheduler = None
    train_dataloader = trainer.callback_handler.train_dataloader
    trainer._prepare_for_training(trainer.state.max_steps, train_dataloader, None)
    new_engine = trainer.model_wrapped
    new_opt = new_engine.optimizer
    create_optimizer_state(new_opt, keys, old_state)

    # Move the state one parameter at a time, by the mapping (collectives: same order on all ranks).
    old_params = dict(old_engine.module.named_parameters())
    layer_names = [n for n, _ in family.layers(old_model)[0].named_parameters()]
    sources = parameter_sources(family, mapping, old_depth, layer_names)
    kept = kept_parameters(family, mapping, old_depth, layer_names)
    for name, p in new_engine.module.named_parameters():
        src = sources.get(name, name)  # parameters outside the blocks map to themselves
        if src is None:
            continue  # fresh layer: the model's own init, zero moments ("random" init)
        source = old_params[src]
        factor = 1.0 if name in kept else init_factor(family, name, g.init, g.beta)
        weight = safe_get_full_fp32_param(source)
        safe_set_full_fp32_param(p, weight * factor if factor != 1.0 else weight)
        for key in keys:
            moment = safe_get_full_optimizer_state(source, key)
            if name not in kept and g.optimizer_state != "copy":
                moment = torch.zeros_like(moment)  # "zero"; "fresh" too, as ZeRO keeps one step per flat group
            safe_set_full_optimizer_state(p, moment, key)
        del weight
    sync_model_weights(new_opt)

    if sched_state is not None:
        sched = _scheduler(trainer)
        sched.load_state_dict(sched_state)
        for group, lr in zip(sched.optimizer.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    for k, v in counters.items():
        setattr(new_engine, k, v)
    _release(old_engine)
    return mapping
