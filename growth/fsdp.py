"""Growth under FSDP2 (torch ``fully_shard``): the only module that knows FSDP.

FSDP2 shards every parameter on its own: a DTensor split on dim 0 over the data-parallel mesh,
each rank holding rows ``[r*ceil(n/N), ...)``. A new block is a copy of an old block of the same
shapes, so each rank already holds exactly the rows of its new shards. A growth event therefore
moves nothing between ranks:

1. each new block is built on the meta device and ``fully_shard``-ed with the settings of the
   block it copies (mesh, mixed-precision policy, reshard-after-forward, offload, placements);
   only its local shards are then allocated;
2. its local shards are copies of the source block's local shards (times the init's factor), and
   its optimizer state (exp_avg, exp_avg_sq: DTensors of the same layout; step) is cloned shard by
   shard through growth/optim.py;
3. the blocks go into place (config depth, per-layer indices) and the root FSDP state runs its
   lazy init again, so that its list of units, its FQNs and its implicit prefetch order include
   the new blocks.

The model, optimizer and LR scheduler stay the same objects (FSDP2 works in place), so the
Trainer's loop, its local references and the schedule simply continue. The only event that needs
communication is a ``random`` (fresh) block: it is initialised on rank 0 and broadcast once.

Private FSDP2 internals used here (``_get_fsdp_state``, the param group's mesh / mp / offload
settings, ``_lazy_init``) are pinned by tests/test_private_apis.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from .comm import phase
from .families import family_of
from .grow import plan
from .operators import original_positions
from .optim import add_parameters, check_state_policy
from .surgery import check_init, init_factor


def fsdp_units(model: nn.Module) -> Iterator[FSDPModule]:
    return (m for m in model.modules() if isinstance(m, FSDPModule))


def is_fsdp2(model: nn.Module) -> bool:
    """True when ``fully_shard`` was applied to ``model`` (it is then the root unit)."""
    return isinstance(model, FSDPModule)


def local_numel(model: nn.Module) -> int:
    """Parameter elements this rank holds (its shards), against ``p.numel()``: the full model's."""
    return sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())


def _base_class(module: nn.Module) -> type:
    # fully_shard swaps a module's class for FSDP<Class>(FSDPModule, Class): build the original.
    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def _param_groups(state) -> list:
    # torch 2.13 keeps a list (per-parameter meshes); earlier releases one group or None.
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is None:
        group = getattr(state, "_fsdp_param_group", None)
        groups = [group] if group is not None else []
    return groups


def shard_settings(unit: FSDPModule) -> dict:
    """``fully_shard`` keyword arguments that shard a module exactly like ``unit``."""
    state = unit._get_fsdp_state()
    groups = _param_groups(state)
    if len(groups) != 1:
        raise NotImplementedError(f"growth under FSDP2: a block with {len(groups)} FSDP param groups (per-parameter meshes)")
    group = groups[0]
    if getattr(state, "_auto_reshard_after_forward", False):
        reshard = None
    elif group.post_forward_mesh_info is None:
        reshard = False
    elif group.post_forward_mesh_info.shard_mesh_size == group.mesh_info.shard_mesh_size:
        reshard = True
    else:
        reshard = group.post_forward_mesh_info.shard_mesh_size  # reshard to a smaller world (an int)
    placement = {id(fp.sharded_param): fp.fsdp_placement for fp in group.fsdp_params}
    return {"mesh": group.mesh_info.mesh, "reshard_after_forward": reshard, "mp_policy": group.mp_policy,
            "offload_policy": group.offload_policy, "placements": placement}


def _copy_block_attributes(template: nn.Module, layer: nn.Module) -> None:
    # HF gradient checkpointing lives in per-module attributes set by gradient_checkpointing_enable;
    # a block built from its class would not checkpoint while its neighbours do.
    for a, b in zip(template.modules(), layer.modules()):
        for attr in ("gradient_checkpointing", "_gradient_checkpointing_func"):
            if attr in vars(a):
                setattr(b, attr, getattr(a, attr))
        b.train(a.training)


def _sharded_like(template: nn.Module, layer: nn.Module) -> None:
    """``fully_shard`` ``layer`` (same structure as ``template``) with ``template``'s settings."""
    settings = shard_settings(template)
    by_name = {name: settings["placements"][id(p)] for name, p in template.named_parameters()}
    new_placement = {id(p): by_name[name] for name, p in layer.named_parameters()}
    fully_shard(layer, mesh=settings["mesh"], reshard_after_forward=settings["reshard_after_forward"],
                mp_policy=settings["mp_policy"], offload_policy=settings["offload_policy"],
                shard_placement_fn=lambda p: new_placement[id(p)])


def _fresh_block(model: nn.Module, template: nn.Module, idx: int) -> nn.Module:
    """A ``random``-init block: the model's own initialisation, drawn on rank 0 and broadcast (the
    one growth case that communicates), then sharded like ``template``."""
    ref = next(template.parameters())
    layer = _base_class(template)(model.config, idx).to(device=ref.to_local().device, dtype=ref.dtype)
    layer.apply(model._init_weights)
    with phase("fresh"):
        for t in [*layer.parameters(), *layer.buffers()]:
            dist.broadcast(t.data, src=0)
    _copy_block_attributes(template, layer)
    _sharded_like(template, layer)  # each rank keeps its own rows of the full tensors: no communication
    return layer


def _empty_block(model: nn.Module, template: nn.Module, idx: int) -> nn.Module:
    """A block for position ``idx`` built on the meta device and sharded like ``template``; only
    this rank's shards are allocated (uninitialised: a copy fills them)."""
    ref = next(template.parameters())
    with torch.device("meta"):
        layer = _base_class(template)(model.config, idx).to(dtype=ref.dtype)
    _copy_block_attributes(template, layer)
    _sharded_like(template, layer)
    layer.to_empty(device=ref.to_local().device)
    return layer


def _copy_shards(layer: nn.Module, source: nn.Module, factors: dict[str, float]) -> None:
    """``layer``'s local shards := ``source``'s local shards (times the init's factor). Same shapes,
    same mesh and placements, so the rows line up rank by rank: no communication."""
    for name, p in layer.named_parameters():
        local = p.to_local()
        local.copy_(source.get_parameter(name).to_local())
        if factors.get(name, 1.0) != 1.0:
            local.mul_(factors[name])
    for name, b in layer.named_buffers():  # buffers are not sharded
        b.copy_(source.get_buffer(name))


def _reinit_root(model: FSDPModule) -> None:
    """Make the root FSDP state learn the current set of units: rerun its lazy init (the list of
    states, FQNs, the shared communication context) as on the first forward. Between two steps
    nothing is in flight, and each param group's own lazy init is idempotent for old units."""
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPStateContext

    root = model._get_fsdp_state()
    if root._is_root is None:
        return  # no forward yet: the first forward's lazy init will find the new units
    for unit in fsdp_units(model):
        state = unit._get_fsdp_state()
        state._is_root = None
        for group in _param_groups(state):
            group._module_fqn = None
    root._state_ctx = FSDPStateContext()
    root._lazy_init()


def _explicit_prefetch(layers: list[nn.Module]) -> None:
    """Layer-wise explicit prefetching (``set_modules_to_{forward,backward}_prefetch``, as in
    torchtitan) is a list per block; extend the pattern over the grown stack. The default
    implicit prefetching is recomputed by FSDP each iteration and needs nothing."""
    states = [layer._get_fsdp_state() for layer in layers]
    ahead = max(len(s._states_to_forward_prefetch) for s in states)
    behind = max(len(s._states_to_backward_prefetch) for s in states)
    if ahead:
        for i, s in enumerate(states):
            s._states_to_forward_prefetch = states[i + 1:i + 1 + ahead]
    if behind:
        for i, s in enumerate(states):
            s._states_to_backward_prefetch = states[max(0, i - behind):i][::-1]


@torch.no_grad()
def grow_fsdp(model: nn.Module, depth: int, optimizer: torch.optim.Optimizer | None = None, *,
              operator: str = "stack_last", init: str = "copy", beta: float = 1.0, block: int | None = None,
              optimizer_state: str = "copy") -> list:
    """Grow a ``fully_shard``-ed HF causal LM in place to ``depth`` layers, and its optimizer.

    The same contract as ``growth.grow`` (same mapping, inits and optimizer-state policies), on
    sharded parameters. Returns the mapping."""
    check_state_policy(optimizer_state)
    check_init(init, beta)
    if not is_fsdp2(model):
        raise ValueError("growth under FSDP needs FSDP2 (fully_shard): set fsdp_version: 2 in the accelerate config "
                         "or fsdp_config={'version': 2}; FSDP1's flat parameters cannot take new layers")
    family = family_of(model)
    old = list(family.layers(model))
    if not all(isinstance(layer, FSDPModule) for layer in old):
        raise ValueError(f"growth under FSDP2 needs every block to be its own FSDP unit: wrap {type(old[0]).__name__} "
                         "(fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP, fsdp_transformer_layer_cls_to_wrap: the block class)")
    if hasattr(old[0], "_checkpoint_wrapped_module"):
        raise NotImplementedError("growth under FSDP2 with fsdp_activation_checkpointing (CheckpointWrapper blocks) is not "
                                  "supported: use the Trainer's gradient_checkpointing, which new blocks inherit")
    if optimizer is not None:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    mapping = plan(model, depth, operator, init, block)
    for unit in fsdp_units(model):
        unit.reshard()  # sharded parameters registered (a no-op after a training step)

    keep = original_positions(mapping, len(old))
    kept = dict(zip(keep, range(len(old))))
    factors = {n: init_factor(family, n, init, beta) for n, _ in old[0].named_parameters()}
    family.update_config(model.config, list(mapping))  # before building: blocks read their config
    layers, added = [], []
    for i, src in enumerate(mapping):
        if i in kept:
            layers.append(old[kept[i]])
        elif src is None:
            layers.append(_fresh_block(model, old[0], i))
        else:
            with phase("rebuild"):
                layer = _empty_block(model, old[src], i)
            with phase("copy"):
                _copy_shards(layer, old[src], factors)
            layers.append(layer)
        if i not in kept:
            added.append((i, src))
    with phase("rebuild"):
        for i, layer in enumerate(layers):
            family.fix_layer(layer, i, model.config)
        family.set_layers(model, nn.ModuleList(layers))
        _reinit_root(model)
        _explicit_prefetch(layers)

    if optimizer is not None:
        new_params = []
        for i, src in added:
            for name, p in layers[i].named_parameters():
                source = old[src].get_parameter(name) if src is not None else None
                new_params.append((p, source, old[0].get_parameter(name)))
        with phase("copy"):  # DTensor clone / zeros_like act on the local shards: no communication
            add_parameters(optimizer, new_params, optimizer_state, order=model.parameters())
    return mapping


def unsharded_parameters(model: nn.Module) -> list[str]:
    """Names of parameters that FSDP2 did not turn into sharded DTensors."""
    return [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
