"""Growth under ZeRO 1/2/3 with each copy method, in one multi-process launch:
`torchrun --nproc_per_node 2 tests/zero_worker.py OUT CASE [CASE ...]`, CASE = stage:init:state:method[:bf16]
(stage 1, 2, 3, or "ddp"; run in this order, DDP ones last). Also runs single-process (`python ...`, stage "single").
A trailing ":frozen" freezes the input embedding (checked unchanged across the event).
A trailing ":events3" grows 2 -> 3 -> 4 -> 5 instead (three engine rebuilds; leaks are counted after the last).

Per case, each rank trains a tiny llama 3 steps, grows 2 -> 4 (stack_last) with GROWTH_DISTRIBUTED_COPY=method,
counts the growth event's bytes by phase (growth.comm), saves its own ZeRO state right after the
event (every fp32 master and moment partition, its bf16/fp32 parameter partitions or replicas) to
OUT/<case>.rank<R>.pt, then trains 2 more steps (losses in the same file).
"""

import gc
import os
import sys
import weakref

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_model  # noqa: E402

from growth.comm import count_bytes  # noqa: E402
from growth.distributed import cpu_distributed_shim  # noqa: E402
from growth.trainer import enable_growth  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out, cases = sys.argv[1], sys.argv[2:]
cpu_distributed_shim(deepspeed=True)
distributed = torch.distributed.is_initialized()
rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
torch.set_num_threads(1)

g = torch.Generator().manual_seed(0)
starts = torch.randint(2, 60, (64, 1), generator=g)
ids = ((starts + torch.arange(16)) % 95 + 2).tolist()
data = [{"input_ids": torch.tensor(r), "labels": torch.tensor(r)} for r in ids]


def local_state(engine) -> dict:
    """This rank's own state, no communication: flat fp32 partitions and their optimizer state,
    and the model's parameter storage (ZeRO-3: ds_tensor partitions, plus full data of the
    persistent ones; ZeRO-1/2: the full replicas)."""
    from growth.deepspeed import flat_partitions

    opt = engine.optimizer
    flats = flat_partitions(opt)
    state = {"flat": [f.detach().clone() for f in flats],
             "opt": [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.optimizer.state[f].items()} for f in flats],
             "params": {}}
    for name, p in engine.module.named_parameters():
        if hasattr(p, "ds_tensor"):
            state["params"][name] = p.ds_tensor.detach().clone()
            if p.data.numel() == p.ds_numel:  # persistent: replicated in full
                state["params"][name + ":full"] = p.data.detach().clone()
        else:
            state["params"][name] = p.detach().clone()
    return state


def flat_tensors(zero_optimizer) -> list:
    """The big tensors of a ZeRO optimizer: fp32 master partitions, their moments, flat weight buffers."""
    from growth.deepspeed import flat_partitions

    flats = flat_partitions(zero_optimizer)
    out = list(flats) + [v for f in flats for v in zero_optimizer.optimizer.state.get(f, {}).values() if torch.is_tensor(v)]
    for name in ("bit16_groups_flat", "bf16_groups_flat", "fp16_partitioned_groups_flat"):
        out += [t for t in getattr(zero_optimizer, name, []) if torch.is_tensor(t)]
    return out


def optimizer_steps(trainer) -> dict:
    """Adam's step per parameter name (torch optimizers: single process, DDP)."""
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)
    return {n: float(opt.state[p]["step"]) if p in opt.state else None for n, p in trainer.model.named_parameters()}


def run(case: str) -> None:
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    stage, init, policy, method, *rest = case.split(":")
    bf16 = "bf16" in rest
    # events3: three growth events 2 -> 3 -> 4 -> 5 (three engine rebuilds), checked for leaks after the last
    points, max_steps = ([[2, 3], [3, 4], [4, 5]], 6) if "events3" in rest else ([[3, 4]], 5)
    zero = stage not in ("ddp", "single")
    os.environ["GROWTH_DISTRIBUTED_COPY"] = method
    if distributed:
        AcceleratorState._reset_state(reset_partial_state=False)  # a new Accelerator per case
        if not zero:  # DDP from here on: forget the DeepSpeed marks left by the previous cases
            PartialState().distributed_type = DistributedType.MULTI_CPU
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    unset_hf_deepspeed_config()  # the initial model is built plain, as in every case
    model = tiny_model("llama", layers=2).train()
    if "frozen" in rest:  # a frozen parameter outside the blocks: no fp32 master, no moments
        model.model.embed_tokens.weight.requires_grad_(False)
    args = transformers.TrainingArguments(
        os.path.join(out, case.replace(":", "_")), max_steps=max_steps, per_device_train_batch_size=8 // world,
        learning_rate=3e-3, logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        lr_scheduler_type="linear", warmup_steps=2, save_strategy="no", max_grad_norm=1.0, bf16=bf16,
        deepspeed=os.path.join(ROOT, "recipes", "accelerate", f"ds_zero{stage}.json") if zero else None,
        accelerator_config={"use_configured_state": True} if distributed else None, dataloader_drop_last=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    result = {}
    try:
        enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": points},
                                "init": init, "beta": 0.5, "optimizer_state": policy}, run_log=False)
    except ValueError as e:  # rejected before any step
        result["error"] = str(e)
        torch.save(result, os.path.join(out, f"{case}.rank{rank}.pt"))
        return
    grow_now = trainer.grow_now
    old_tensors, old_opts = {}, []  # of every engine replaced so far

    def counted(depth):
        old = trainer.model_wrapped
        if zero:
            old_opts.append(weakref.ref(old.optimizer))
            old_tensors.update({id(t): weakref.ref(t) for t in flat_tensors(old.optimizer)})
        frozen = full_value("model.embed_tokens.weight") if "frozen" in rest else None
        with count_bytes(trace=bool(os.environ.get("GROWTH_COMM_TRACE"))) as c:
            event = grow_now(depth)
        if frozen is not None:
            result["frozen_kept"] = torch.equal(frozen, full_value("model.embed_tokens.weight"))
            result["frozen_after"] = [n for n, p in trainer.model_wrapped.module.named_parameters() if not p.requires_grad]
        result["bytes"] = c.by_phase()
        result["records"] = [r for r in c.records if r["sent"] or r["received"]]
        result["state"] = local_state(trainer.model_wrapped) if zero else optimizer_steps(trainer)
        if zero:  # what the old engine still holds once the event is over (the Trainer's loop keeps the object)
            gc.collect()
            result["old_optimizers_alive"] = [i for i, o in enumerate(old_opts) if o() is not None]
            result["events"] = len(old_opts)
            result["old_tensors_alive_bytes"] = sum(t().numel() * t().element_size() for t in old_tensors.values()
                                                    if t() is not None)
        return event

    def full_value(name):
        import deepspeed

        p = dict(trainer.model_wrapped.module.named_parameters())[name]
        with deepspeed.zero.GatheredParameters([p]):  # ZeRO-3: the full tensor (a no-op otherwise)
            return p.data.detach().clone()

    trainer.grow_now = counted
    trainer.train()
    result["loss"] = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    result["depth"] = trainer.model.config.num_hidden_layers
    if not zero:
        result["steps_at_end"] = optimizer_steps(trainer)
    result["fp32_bytes"] = 4 * sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in trainer.model.parameters())
    torch.save(result, os.path.join(out, f"{case}.rank{rank}.pt"))
    engine = trainer.model_wrapped
    trainer.accelerator.free_memory()
    if zero:
        engine.destroy()
    del trainer, model, engine
    gc.collect()


for case in cases:
    run(case)
if distributed:
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
