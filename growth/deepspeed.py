"""Growth under DeepSpeed ZeRO 1/2/3: the only module that knows DeepSpeed.

DeepSpeed cannot add parameters to an engine after ``initialize``, so a growth event builds the
grown model (partitioned under ZeRO-3 through ``deepspeed.zero.Init``, which transformers applies
in ``from_config``), builds a new engine through the Trainer's own ``_prepare_for_training``, and
then moves the state by the layer mapping (``surgery.parameter_sources``): fp32 master weight and
every optimizer moment of each new parameter from its source. Step counters (optimizer,
scheduler, engine) continue.

How the state moves (``GROWTH_DISTRIBUTED_COPY``, default ``local``; ``gather`` is the reference
path, kept for comparison and benchmarks):

* ``local``, ZeRO-3: every parameter is partitioned on its own (rank r holds elements
  ``[r*ps, (r+1)*ps)``), and a new block has the shapes of its source, so each rank already holds
  exactly the slices its new partitions need: master, moments and bf16/fp32 partition are copied
  rank-locally (``safe_{get,set}_local_*``), persistent (small, replicated) parameters from the old
  replica. The rebuild itself sends nothing either: the grown model is partitioned without
  ``zero.Init``'s broadcast from rank 0 and without transformers' gathered weight init (every
  value is overwritten by the copy); only fresh layers (``init: random``) are initialised through
  a gather, rank 0's values, as a fresh model would be.
* ``local``, ZeRO-1/2 and BF16_Optimizer: the flat partitions cut across parameters, so a rank's
  new partition partly lives on other ranks. Each rank computes the same transfer table from the
  two flat layouts and receives, in one all-to-all, only the master/moment elements of its own new
  partition that another rank holds. Model weights are full replicas: copied locally, and the
  engine's start-up broadcast from rank 0 is skipped (every rank writes the same values).
* ``gather``: ``safe_get_full_*`` / ``safe_set_full_*`` per parameter: every rank receives the whole
  model's masters and moments (what the issue measured: 84 GB per rank for 7B).

Both paths give bit-identical masters and moments (tests/test_zero_growth.py, which also counts
the bytes through ``growth.comm``). Private DeepSpeed / transformers APIs used here are pinned by
tests/test_private_apis.py.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch
from deepspeed.utils import (
    safe_get_full_fp32_param,
    safe_get_full_optimizer_state,
    safe_get_local_fp32_param,
    safe_get_local_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
    safe_set_local_optimizer_state,
)

from . import comm
from .families import family_of
from .grow import plan
from .memory import trim_heap
from .surgery import build_grown, init_factor, kept_parameters, parameter_sources

COPY_ENV = "GROWTH_DISTRIBUTED_COPY"
COPY_MODES = ("local", "gather")


def copy_mode() -> str:
    """How a growth event moves ZeRO state: ``local`` (default) or ``gather`` (reference path)."""
    mode = os.environ.get(COPY_ENV, "local")
    if mode not in COPY_MODES:
        raise ValueError(f"{COPY_ENV}: unknown mode {mode!r}; choose one of {', '.join(COPY_MODES)}")
    return mode


def check_growth_config(growth_config) -> None:
    """Reject, before any compute, what ZeRO cannot do the way the other backends do it."""
    if growth_config.optimizer_state == "fresh":
        # ZeRO keeps one Adam step count per flat partition (all parameters of a group share it):
        # a new parameter cannot restart at step 0 with bias correction as a fresh Adam would.
        raise ValueError("growth.optimizer_state: 'fresh' is not supported under DeepSpeed ZeRO (Adam's step count is "
                         "shared by every parameter of a partition, so new parameters cannot restart at step 0); "
                         "use 'zero' (zero moments, the group's step) or 'copy'")


def flat_partitions(zero_optimizer) -> list[torch.Tensor]:
    """The flat fp32 master partitions that the basic optimizer steps (its state keys)."""
    if hasattr(zero_optimizer, "fp32_partitioned_groups_flat"):  # ZeRO-3
        return list(zero_optimizer.fp32_partitioned_groups_flat)
    if hasattr(zero_optimizer, "fp32_groups_flat_partition"):  # BF16_Optimizer (bf16 with ZeRO-0/1)
        return list(zero_optimizer.fp32_groups_flat_partition)
    return list(zero_optimizer.single_partition_of_fp32_groups)  # ZeRO-1/2


def _is_stage3(zero_optimizer) -> bool:
    return hasattr(zero_optimizer, "fp32_partitioned_groups_flat")


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
    """Copy the fp32 masters into the (possibly bf16) model parameters, as after a step (gathers)."""
    if hasattr(zero_optimizer, "update_lp_params"):  # ZeRO-1/2, BF16_Optimizer: partitions, then all-gather
        zero_optimizer.update_lp_params()
        return
    _masters_to_partitions(zero_optimizer)
    if zero_optimizer.persistent_parameters:  # small parameters ZeRO-3 keeps gathered
        zero_optimizer.persistent_parameters[0].all_gather(zero_optimizer.persistent_parameters)
    zero_optimizer.invalidate_secondary_tensor()


def _masters_to_partitions(zero_optimizer) -> None:
    """ZeRO-3: each rank's fp32 master partition into its bf16/fp32 ``ds_tensor`` partitions (local)."""
    for i in range(len(zero_optimizer.fp16_partitioned_groups_flat)):
        zero_optimizer._reassign_or_swap_out_partitioned_parameters(i)


# --- the rebuild, without full-model traffic --------------------------------------------------------
@contextlib.contextmanager
def _rebuild_without_broadcasts(zero3_init_weights: bool):
    """While the grown model and its engine are built: ``zero.Init`` partitions each parameter
    without first broadcasting it from rank 0, transformers skips its gathered ZeRO-3 weight init
    (unless ``zero3_init_weights``), the ZeRO-3 optimizer registers its gradient hooks without
    gathering every parameter, and the ZeRO-1/2 engine skips its start-up broadcast of the model. Safe because the copy then writes every value on every rank (fresh layers excepted:
    they are initialised by ``_init_fresh_layers``)."""
    import transformers.integrations.deepspeed as hf_ds
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.partition_parameters import Init
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3 as Stage3

    def partition_only(self, param):  # Init._zero_init_param less its dist.broadcast
        self._convert_to_deepspeed_param(param)
        param.partition()

    hooks = Stage3.create_reduce_and_remove_grad_hooks

    def hooks_without_gather(self):
        # It gathers each parameter only to register its gradient hook, then partitions it again;
        # torch's post-accumulate-grad hook needs no data. Gathering nothing leaves every
        # parameter partitioned (NOT_AVAILABLE), which is what partition() then expects.
        params = [p for group in self.fp16_groups for p in group]
        saved = [p.all_gather for p in params]
        for p in params:
            p.all_gather = lambda *args, **kwargs: None
        try:
            return hooks(self)
        finally:
            for p, gather in zip(params, saved):
                p.all_gather = gather

    saved = Init._zero_init_param, DeepSpeedEngine._broadcast_model, hf_ds.initialize_weights_zero3
    Init._zero_init_param = partition_only
    DeepSpeedEngine._broadcast_model = lambda self: None
    if not zero3_init_weights:
        hf_ds.initialize_weights_zero3 = lambda model: None
    if hasattr(torch.Tensor, "register_post_accumulate_grad_hook"):
        Stage3.create_reduce_and_remove_grad_hooks = hooks_without_gather
    try:
        yield
    finally:
        Init._zero_init_param, DeepSpeedEngine._broadcast_model, hf_ds.initialize_weights_zero3 = saved
        Stage3.create_reduce_and_remove_grad_hooks = hooks


def _init_fresh_layers(model, layers) -> None:
    """ZeRO-3 fallback for fresh layers (``init: random``): rank 0 initialises each gathered layer
    with the model's own ``_init_weights`` and the result is partitioned to every rank."""
    import deepspeed

    for layer in layers:
        with deepspeed.zero.GatheredParameters(list(layer.parameters()), modifier_rank=0):
            if torch.distributed.get_rank() == 0:
                layer.apply(model._init_weights)


def _copy_buffers(old_model, new_model, layers_path: str, mapping) -> None:
    """Buffers (rotary tables...) are replicated: take them from the old model, block buffers from
    their source layer's (fresh layers keep their own)."""
    old = dict(old_model.named_buffers())
    for name, buf in new_model.named_buffers():
        src = name
        if name.startswith(layers_path + "."):
            index, _, rest = name[len(layers_path) + 1:].partition(".")
            if mapping[int(index)] is None:
                continue
            src = f"{layers_path}.{mapping[int(index)]}.{rest}"
        if src in old and old[src].shape == buf.shape:
            buf.copy_(old[src])


# --- the copies ------------------------------------------------------------------------------------
def _copy_storage(p, q, factor) -> None:
    """``q``'s own storage into ``p``'s, times ``factor``: ZeRO-3's partition slice for slice (same
    shapes, same slices), else the full replica. All a parameter the optimizer does not hold
    (requires_grad False: no master, no moments) needs."""
    src = q.ds_tensor if hasattr(q, "ds_tensor") else q.data
    dst = p.ds_tensor if hasattr(p, "ds_tensor") else p.data
    dst.copy_(src * factor if factor != 1.0 else src)


def _copy_gather(pairs, keys) -> None:
    """Reference path: each full master / moment gathered on every rank, then scattered."""
    for p, q, factor, zero_moments in pairs:
        if not p.requires_grad:
            _copy_storage(p, q, factor)
            continue
        weight = safe_get_full_fp32_param(q)
        safe_set_full_fp32_param(p, weight * factor if factor != 1.0 else weight)
        for key in keys:
            moment = safe_get_full_optimizer_state(q, key)
            safe_set_full_optimizer_state(p, torch.zeros_like(moment) if zero_moments else moment, key)
        del weight


def _copy_zero3_local(new_opt, pairs, keys) -> None:
    """ZeRO-3: rank-local copies of this rank's slices (same shapes, so the same slice indices)."""
    for p, q, factor, zero_moments in pairs:
        if not p.requires_grad:
            _copy_storage(p, q, factor)
            continue
        weight = safe_get_local_fp32_param(q)
        safe_set_local_fp32_param(p, weight * factor if factor != 1.0 else weight)
        for key in keys:
            moment = safe_get_local_optimizer_state(q, key)
            safe_set_local_optimizer_state(p, torch.zeros_like(moment) if zero_moments else moment, key)
    _masters_to_partitions(new_opt)
    # Persistent parameters are replicated in full on every rank (the old ones too, as of the last
    # step's gather): their full value is the old replica times the factor. In bf16 a scaled copy
    # would round differently from the master's cast: those few are gathered instead.
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    persistent = {id(p) for p in new_opt.persistent_parameters}
    gather = []
    for p, q, factor, _ in pairs:
        if id(p) not in persistent:
            continue
        if q.data.numel() != p.ds_numel:  # no full old replica here (e.g. a frozen one): from the new partitions
            gather.append(p)
        elif factor in (0.0, 1.0) or p.dtype == torch.float32:
            # what their all_gather would do (full data, AVAILABLE), from this rank's old replica
            value = (q.data * factor if factor != 1.0 else q.data).to(p.dtype).reshape(p.ds_shape)
            if p.ds_status == ZeroParamStatus.AVAILABLE and p.data.numel() == p.ds_numel:
                p.data.copy_(value)
            else:
                p.data = value.clone() if value.data_ptr() == q.data.data_ptr() else value
                p.ds_status = ZeroParamStatus.AVAILABLE
        else:
            gather.append(p)
    if gather:
        gather[0].all_gather(gather)
    new_opt.invalidate_secondary_tensor()


def _flat_layout(zero_optimizer) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """ZeRO-1/2 / BF16_Optimizer: each group's partition size, and per parameter (by id) its group
    and element offset in the group's flat buffer (rank r's partition is ``[r*P, (r+1)*P)``)."""
    groups = getattr(zero_optimizer, "bit16_groups", None) or zero_optimizer.bf16_groups
    flats = getattr(zero_optimizer, "bit16_groups_flat", None) or zero_optimizer.bf16_groups_flat
    sizes = [f.numel() for f in flat_partitions(zero_optimizer)]
    where = {}
    for i, (params, flat) in enumerate(zip(groups, flats)):
        base, size = flat.data_ptr(), flat.element_size()
        for p in params:
            where[id(p)] = (i, (p.data_ptr() - base) // size)
    return sizes, where


def _copy_flat_local(old_opt, new_opt, pairs, keys) -> None:
    """ZeRO-1/2: every rank builds the same transfer table (which old rank holds which elements of
    which new rank's partition) and receives, in one all-to-all, only the master and moment
    elements of its own new partition held elsewhere; the rest is copied locally."""
    dist = torch.distributed
    world, me = dist.get_world_size(), dist.get_rank()
    old_sizes, old_at = _flat_layout(old_opt)
    new_sizes, new_at = _flat_layout(new_opt)
    old_flat, new_flat = flat_partitions(old_opt), flat_partitions(new_opt)
    old_state = [old_opt.optimizer.state[f] for f in old_flat]
    new_state = [new_opt.optimizer.state[f] for f in new_flat]

    # (src rank, dst rank, old group, old local index, new group, new local index, length, factor, zero moments)
    transfers = []
    for p, q, factor, zero_moments in pairs:
        if id(p) not in new_at:
            continue  # frozen parameter: not in the optimizer
        (gi, qo), (gj, po), n = old_at[id(q)], new_at[id(p)], p.numel()
        pi, pj = old_sizes[gi], new_sizes[gj]
        for r in range(po // pj, (po + n - 1) // pj + 1):  # new owners of p's elements
            a, b = max(po, r * pj) - po, min(po + n, (r + 1) * pj) - po
            for s in range((qo + a) // pi, (qo + b - 1) // pi + 1):  # old owners of those elements of q
                c, d = max(qo + a, s * pi) - qo, min(qo + b, (s + 1) * pi) - qo
                transfers.append((s, r, gi, qo + c - s * pi, gj, po + c - r * pj, d - c, factor, zero_moments))

    def pieces(t):  # the tensors a transfer carries: master, then the moments it keeps
        s, r, gi, oi, gj, ni, n, factor, zero_moments = t
        return [old_flat[gi].narrow(0, oi, n)] + ([] if zero_moments else [old_state[gi][k].narrow(0, oi, n) for k in keys])

    def write(t, values):
        s, r, gi, oi, gj, ni, n, factor, zero_moments = t
        master = values[0]
        new_flat[gj].narrow(0, ni, n).copy_(master * factor if factor != 1.0 else master)
        for k, v in zip(keys, values[1:] if not zero_moments else [None] * len(keys)):
            target = new_state[gj][k].narrow(0, ni, n)
            target.zero_() if v is None else target.copy_(v)

    send = [[] for _ in range(world)]
    recv = [[] for _ in range(world)]
    for t in transfers:
        if t[0] == me and t[1] == me:
            write(t, pieces(t))
        elif t[0] == me:
            send[t[1]].append(t)
        elif t[1] == me:
            recv[t[0]].append(t)
    width = lambda t: t[6] * (1 + (0 if t[8] else len(keys)))  # noqa: E731
    in_splits = [sum(width(t) for t in send[r]) for r in range(world)]
    out_splits = [sum(width(t) for t in recv[r]) for r in range(world)]
    # One collective (every rank takes part, also with nothing to send).
    dtype = old_flat[0].dtype
    inp = torch.cat([x.reshape(-1) for r in range(world) for t in send[r] for x in pieces(t)]) \
        if any(in_splits) else torch.empty(0, dtype=dtype, device=old_flat[0].device)
    out = torch.empty(sum(out_splits), dtype=dtype, device=new_flat[0].device)
    dist.all_to_all_single(out, inp, out_splits, in_splits)
    pos = 0
    for r in range(world):
        for t in recv[r]:
            n, m = t[6], 1 + (0 if t[8] else len(keys))
            write(t, [out.narrow(0, pos + j * n, n) for j in range(m)])
            pos += n * m
    # The model weights are full replicas on every rank: copy them locally (in bf16 a scaled copy
    # would round differently from the master's cast: then all-gather them from the masters).
    if any(factor not in (0.0, 1.0) and p.dtype != torch.float32 for p, _, factor, _ in pairs):
        new_opt.update_lp_params()  # the optimizer's parameters; frozen ones have no master
        pairs = [pair for pair in pairs if not pair[0].requires_grad]
    for p, q, factor, _ in pairs:
        _copy_storage(p, q, factor)


def _holds_tensors(value, depth: int = 0) -> bool:
    if torch.is_tensor(value):
        return True
    if depth < 3 and isinstance(value, (list, tuple)):
        return any(_holds_tensors(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return any(_holds_tensors(v, depth + 1) for v in value.values())
    return False


def _release(engine) -> None:
    """Free the old engine's memory. The Trainer's loop still holds the old engine in a local
    variable (and calls its zero_grad), so the object stays, emptied. Its optimizer stays reachable
    too, from the old parameters (ZeRO-3 ``_z3_optimizer``; ZeRO-1/2 ``_hp_mapping``, views into the
    fp32 partitions and moments): without dropping those links and the optimizer's own tensors,
    the old engine's whole state outlives the event (measured: tests/test_zero_growth.py)."""
    opt = engine.optimizer
    engine.destroy()
    for p in engine.module.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        if hasattr(p, "ds_tensor"):
            p.ds_tensor = torch.empty(0, dtype=p.dtype, device=p.device)
        for link in ("_hp_mapping", "_z3_optimizer"):
            if hasattr(p, link):
                setattr(p, link, None)
    if opt is not None:
        basic = getattr(opt, "optimizer", None)
        if isinstance(basic, torch.optim.Optimizer):
            basic.state.clear()
            basic.param_groups = []
        for name, value in list(vars(opt).items()):  # flat buffers, partitions, gradient buffers
            if _holds_tensors(value):
                setattr(opt, name, type(value)() if isinstance(value, (list, dict)) else None)
    engine.optimizer = None
    engine.lr_scheduler = None
    # Old engine's cycles collected and freed pages returned: with it, RSS after three rebuilds is
    # within 5% of a fresh engine of the final depth (scripts/bench_distributed.py --rss-only).
    trim_heap(collect=True)


def _scheduler(trainer):
    return getattr(trainer.lr_scheduler, "scheduler", trainer.lr_scheduler)


@torch.no_grad()
def grow_engine(trainer, depth: int) -> list:
    """Grow the trainer's DeepSpeed-wrapped model to ``depth``; returns the layer mapping.
    Its phases are labelled for ``growth.comm`` counters: rebuild, copy."""
    g = trainer.growth_config
    check_growth_config(g)
    mode = copy_mode()
    old_engine, old_model = trainer.model_wrapped, trainer.model
    old_opt = old_engine.optimizer
    old_wrappers = (trainer.optimizer, trainer.lr_scheduler)  # accelerate's, around old_opt
    family = family_of(old_model)
    mapping = plan(old_model, depth, g.operator, g.init, g.block)
    old_depth = len(family.layers(old_model))
    layer_names = [n for n, _ in family.layers(old_model)[0].named_parameters()]
    sources = parameter_sources(family, mapping, old_depth, layer_names)
    kept = kept_parameters(family, mapping, old_depth, layer_names)

    link_optimizer_state(old_opt)
    keys = moment_keys(old_opt)
    old_state = [{k: v for k, v in old_opt.optimizer.state[f].items() if k not in keys} for f in flat_partitions(old_opt)]
    # The Trainer's scheduler (an HF LambdaLR stepped by the Trainer, or DeepSpeed's own inside a wrapper).
    sched_state = _scheduler(trainer).state_dict() if trainer.lr_scheduler is not None else None
    counters = {k: getattr(old_engine, k) for k in ("global_steps", "global_samples", "micro_steps", "skipped_steps")}

    with comm.phase("rebuild"):
        fresh = [i for i, src in enumerate(mapping) if src is None]
        rebuild = _rebuild_without_broadcasts(zero3_init_weights=False) if mode == "local" else contextlib.nullcontext()
        # Same seed on every rank: fresh layers (init random) agree without a broadcast.
        with torch.random.fork_rng(devices=[]), rebuild:
            torch.manual_seed(trainer.args.seed + trainer.state.global_step)
            # The grown model, built from its config (ZeRO-3: partitioned at construction by zero.Init).
            new_model = build_grown(old_model, mapping)
            if mode == "local":
                _copy_buffers(old_model, new_model, family.layers_path, mapping)
                if fresh and _is_stage3(old_opt):
                    _init_fresh_layers(new_model, [family.layers(new_model)[i] for i in fresh])
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

    # (new parameter, old parameter, factor on the weight, zero moments?) by the mapping; parameters
    # outside the blocks map to themselves; fresh layers keep their init and zero moments.
    old_params = dict(old_engine.module.named_parameters())
    pairs = []
    for name, p in new_engine.module.named_parameters():
        src = sources.get(name, name)
        if src is None:
            continue
        new = name in sources and name not in kept  # a copy (old layers and non-block parameters move)
        factor = init_factor(family, name, g.init, g.beta) if new else 1.0
        pairs.append((p, old_params[src], factor, new and g.optimizer_state != "copy"))
    with comm.phase("copy"):
        if mode == "gather":
            _copy_gather(pairs, keys)
            sync_model_weights(new_opt)
        elif _is_stage3(new_opt):
            _copy_zero3_local(new_opt, pairs, keys)
        else:
            _copy_flat_local(old_opt, new_opt, pairs, keys)

    if sched_state is not None:
        sched = _scheduler(trainer)
        sched.load_state_dict(sched_state)
        for group, lr in zip(sched.optimizer.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    for k, v in counters.items():
        setattr(new_engine, k, v)
    _release(old_engine)
    for wrapper in old_wrappers:  # still referenced by the Trainer's loop: drop their link to old_opt
        if wrapper is not None and getattr(wrapper, "optimizer", None) is old_opt:
            wrapper.optimizer = None
    return mapping
