"""HF Trainer integration: the only module that knows the Trainer's internals.

One line adds depth growth to any ``transformers.Trainer`` or subclass (TRL's SFTTrainer...)::

    trainer = growth.enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "fraction",
                                                          "points": [[0.3, 4], [0.6, 6]]}})

It gives the trainer instance a subclass that (1) grows the model when the schedule says so,
inside the run, (2) re-wraps it (DDP) or rebuilds the DeepSpeed engine (growth/deepspeed.py), and
(3) reads the wrapped model from ``self.model_wrapped`` where the Trainer passes a local variable
that a growth made stale. The depth at any step is a function of the schedule, so resuming a
checkpoint first grows the model to the checkpoint's depth, then loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import rotate_checkpoints

from .config import GrowthConfig
from .flops import cumulative_training_flops, training_flops_per_token
from .grow import current_depth, grow, plan
from .safety import STAGING, any_rank, nonfinite_parameters, prepare_staging, publish_checkpoint
from .schedule import GrowthSchedule
from .surgery import build_grown

METRICS_FILE = "metrics.jsonl"


def tokens_per_step(args, seq_len: int) -> int:
    """Tokens of one optimizer step over all ranks (TrainingArguments ``args``)."""
    return seq_len * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
EVENTS_FILE = "growth_events.jsonl"


def _say(msg: str) -> None:
    try:  # beside the Trainer's progress bar, not through it
        from tqdm.auto import tqdm

        tqdm.write(msg)
    except ImportError:
        print(msg, flush=True)


def count_params(model: torch.nn.Module) -> int:
    # ZeRO-3 replaces partitioned parameters by empty placeholders that carry ds_numel.
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def check_backend_engaged(trainer: Trainer) -> None:
    """Raise, naming it, when the distributed backend the run asked for is not the one running.

    Called once the Trainer has prepared the model. The traps it catches are silent otherwise:
    FSDP on a machine without GPU became plain DDP (accelerate drops the FSDP plugin for
    MULTI_CPU), a DeepSpeed config left the model unwrapped, several processes trained alone."""
    from .distributed import fsdp_requested

    if getattr(trainer, "is_distributed_loading_by_transformers", False):
        return  # sharded at load time (tensor / expert parallel): the model owns placement and reduction
    args = trainer.args
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = max(world, torch.distributed.get_world_size())
    wrapped = trainer.model_wrapped
    while hasattr(wrapped, "_orig_mod"):  # torch.compile's wrapper
        wrapped = wrapped._orig_mod
    state = trainer.accelerator.state
    if world > 1 and args.world_size != world:
        raise RuntimeError(f"{world} processes were launched but the Trainer sees {args.world_size} "
                           f"(accelerate: {state.distributed_type}): each rank would train alone; on a machine "
                           "without GPU pass --use_cpu true (DeepSpeed / FSDP: run through scripts/train.py)")
    if fsdp_requested({"fsdp": args.fsdp}):
        if not trainer.is_fsdp_enabled:
            raise RuntimeError(f"FSDP was requested (accelerate config or --fsdp) but the Trainer runs {state.distributed_type} "
                               "without it; on a machine without GPU start the run through scripts/train.py "
                               "(growth.distributed.cpu_distributed_shim)")
        if state.fsdp_plugin.fsdp_version == 2:
            from .fsdp import unsharded_parameters

            plain = unsharded_parameters(trainer.model)
            if plain:
                raise RuntimeError(f"FSDP2 was requested but {len(plain)} parameters are not sharded DTensors "
                                   f"(e.g. {plain[0]}): fully_shard did not engage")
    elif args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if not trainer.is_deepspeed_enabled or not any(c.__name__ == "DeepSpeedEngine" for c in type(wrapped).__mro__):
            raise RuntimeError(f"DeepSpeed was requested but the model is wrapped in {type(wrapped).__name__}, not a "
                               f"DeepSpeed engine (accelerate: {state.distributed_type})")
    elif world > 1 and not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        raise RuntimeError(f"{world} processes were launched but the model is not wrapped in DDP ({type(wrapped).__name__}, "
                           f"accelerate: {state.distributed_type}, {args.world_size} process(es)): each rank would train "
                           "alone; on a machine without GPU pass --use_cpu true")


class GrowingTrainerMixin:
    """Mixed into the trainer's own class by ``enable_growth``; see the module docstring."""

    growth_config: GrowthConfig
    growth_steps: GrowthSchedule | None = None  # the schedule in optimizer steps, once the run's length is known

    # --- schedule and compute, as pure functions of the step ---------------------------------
    def _tokens_per_step(self) -> int:
        return tokens_per_step(self.args, self._growth_seq_len)

    def _flops_per_token(self, depth: int) -> float:
        # Memoized: every log asks for it, and each HF config attribute read costs microseconds.
        # Only the depth changes in a run (growth keeps every other dimension).
        memo = self.__dict__.setdefault("_growth_flops_memo", {})
        key = (self._growth_seq_len, depth)
        if key not in memo:
            memo[key] = training_flops_per_token(self.model.config, self._growth_seq_len, depth)
        return memo[key]

    def _resolve_growth_schedule(self) -> None:
        if self._growth_seq_len is None:
            self._growth_seq_len = len(self.train_dataset[0]["input_ids"])
        args = self.args
        max_steps = args.max_steps
        if max_steps <= 0:
            max_steps = self.set_initial_training_values(args, self.get_train_dataloader())[-1]
        schedule = self.growth_config.schedule or GrowthSchedule(initial_depth=current_depth(self.model), points=())
        self.growth_steps = schedule.to_steps(max_steps, self._tokens_per_step(), self._flops_per_token)

    def compute_at(self, step: int) -> dict:
        tokens = step * self._tokens_per_step()
        flops = cumulative_training_flops(self.growth_steps, step, self._tokens_per_step(), self._flops_per_token)
        return {"compute/tokens": tokens, "compute/flops": flops}

    # --- Trainer overrides --------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:  # the newest *complete* one (growth/safety.py)
            from .safety import resolve_checkpoint

            resume_from_checkpoint = str(resolve_checkpoint(True, self.args.output_dir)[0])
        self._resolve_growth_schedule()
        self._data_resume_step = 0
        if resume_from_checkpoint:
            # The checkpoint holds the grown model: build that structure before the Trainer loads it.
            state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, "trainer_state.json"))
            self._data_resume_step = state.global_step
            # Through each event in turn, so per-layer config (e.g. Qwen's layer_types) follows the same mappings.
            for point, depth in self.growth_steps.points:
                if point <= state.global_step and depth > current_depth(self.model):
                    self._grow_structure(depth)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_train_dataloader(self):
        # A dataset that reads its own share per rank (growth.data.StreamingBlocks) makes its own
        # loader, positioned at the resumed step: accelerate would dispatch an IterableDataset from
        # rank 0, or have every rank read all of it.
        make = getattr(self.train_dataset, "make_dataloader", None)
        if make is None:
            return super().get_train_dataloader()
        return make(self.args, self.accelerator, self.data_collator, getattr(self, "_data_resume_step", 0))

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(self.model_wrapped, inputs, num_items_in_batch)
        # Kept as a tensor (no device sync here); safety.RunGuard reads it once per optimizer step.
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad
        return loss

    _nonfinite_loss = None

    def take_nonfinite_loss(self) -> bool:
        """Whether a micro-step since the last call had a non-finite loss (this process)."""
        bad, self._nonfinite_loss = self._nonfinite_loss, None
        return bool(bad) if bad is not None else False

    # --- checkpoints: written under output_dir/.staging, renamed into place when complete ------
    _staging = False
    checkpoint_files: dict = {}  # extra files written into each checkpoint (name -> text), e.g. the recipe

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model, trial):
        run_dir, name = super()._get_output_dir(trial), f"checkpoint-{self.state.global_step}"
        bad = nonfinite_parameters(self.model)
        if any_rank(bool(bad), self.args.device):  # a broken model must not rotate out a good checkpoint
            if self.is_world_process_zero():
                _say(f"[safety] step {self.state.global_step}: {name} not saved: non-finite weights {', '.join(bad)}")
            return
        staged, final = os.path.join(run_dir, STAGING, name), os.path.join(run_dir, name)
        if self.args.should_save:
            prepare_staging(run_dir, name)
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only .staging: done below instead
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank's files (DeepSpeed shards, RNG states) are written
        if self.args.should_save:
            if self.state.best_model_checkpoint == staged:
                self.state.best_model_checkpoint = final
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
            publish_checkpoint(staged, final, self.checkpoint_files)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def _clip_grad_norm(self, model):
        return super()._clip_grad_norm(self.model_wrapped)

    def _get_grad_norm(self, model, grad_norm=None):
        return super()._get_grad_norm(self.model_wrapped, grad_norm=grad_norm)

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, *args, **kwargs):
        return super()._maybe_log_save_evaluate(tr_loss, grad_norm, self.model_wrapped, *args, **kwargs)

    def _prepare_for_training(self, *args, **kwargs):
        with self._whole_model_compile_off():  # blocks are compiled one by one instead (growth/compile.py)
            model, train_dataloader = super()._prepare_for_training(*args, **kwargs)
        self._apply_block_settings()  # also reached from a DeepSpeed engine rebuild at growth
        check_backend_engaged(self)
        return model, train_dataloader

    def save_model(self, output_dir=None, _internal_call=False):
        if self.is_fsdp_enabled and "FULL_STATE_DICT" not in str(self.accelerator.state.fsdp_plugin.state_dict_type):
            # With a sharded state-dict type the Trainer writes nothing here (its checkpoints hold the
            # shards). A checkpoint still gets the config (its depth); a final model must load with
            # from_pretrained: gather it (a collective: every rank takes part).
            if not _internal_call:
                self._save(output_dir, state_dict=self.accelerator.get_state_dict(self.model))
            elif self.args.should_save:
                self.model.config.save_pretrained(output_dir)
            return
        super().save_model(output_dir, _internal_call)

    def log(self, logs, *args, **kwargs):
        # Added here, before the callbacks run, so wandb / TensorBoard / metrics.jsonl all see them.
        if self.growth_steps is not None and self.state.global_step is not None:
            logs.update(self.compute_at(self.state.global_step))
            logs["growth/depth"], logs["growth/params"] = self._model_size()
        return super().log(logs, *args, **kwargs)

    def _model_size(self) -> tuple[int, int]:
        """(depth, parameters), counted again only when the model object or its configured depth
        changed: walking every parameter at every log is per-step work (scripts/bench_overhead.py)."""
        key = (id(self.model), self.model.config.num_hidden_layers)
        cached = self.__dict__.get("_growth_model_size")
        if cached is None or cached[0] != key:
            cached = self._growth_model_size = (key, (current_depth(self.model), count_params(self.model)))
        return cached[1]

    # --- torch.compile and activation checkpointing, per block, across growth (growth/compile.py) ---
    _checkpoint_function = None  # what activation_checkpointing_enable gave the blocks, kept for new ones

    def _compile_kwargs(self) -> dict | None:
        """torch.compile's arguments from the Trainer's own flags (--torch_compile ...), None without."""
        a = self.args
        if not a.torch_compile:
            return None
        kwargs = {"backend": (a.torch_compile_backend or "inductor").lower()}
        if a.torch_compile_mode is not None:
            kwargs["mode"] = a.torch_compile_mode
        return kwargs

    @contextlib.contextmanager
    def _whole_model_compile_off(self):
        # accelerate's prepare would torch.compile the whole model (a graph unrolled over the block
        # list, recompiled at every growth, and an OptimizedModule that re-preparing drops).
        from accelerate.utils import DynamoBackend

        plugin = self.accelerator.state.dynamo_plugin
        saved, plugin.backend = plugin.backend, DynamoBackend.NO
        try:
            yield
        finally:
            plugin.backend = saved

    def _apply_block_settings(self) -> None:
        """Compile / checkpoint the blocks that are not (after prepare, and after each growth)."""
        from .compile import checkpoint_blocks, checkpoint_function, compile_blocks, compiled_blocks

        a = self.args
        if a.activation_checkpointing:
            self._checkpoint_function = self._checkpoint_function or checkpoint_function(self.model)
            if self._checkpoint_function is None:
                raise RuntimeError("activation_checkpointing is true but no block of the model is checkpointed "
                                   f"({type(self.model).__name__}): it did not engage")
            every = dict(a.activation_checkpointing_kwargs or {}).get("every_n_layers", 1)
            checkpoint_blocks(self.model, self._checkpoint_function, every)
        kwargs = self._compile_kwargs()
        if kwargs is not None:
            if a.use_cache:
                raise ValueError("torch_compile: true with use_cache: true: the KV cache makes each block's graph "
                                 "specific to its layer index (a compile per block); set use_cache: false for training")
            if any(hasattr(p, "ds_id") for p in self.model.parameters()):
                # ZeRO-3 gathers each submodule's parameters in hooks DeepSpeed marks torch.compiler.disable:
                # every block would break its graph around each of them, i.e. run mostly eagerly.
                raise ValueError("torch_compile: true is not supported with DeepSpeed ZeRO-3 (its parameter-gathering "
                                 "hooks inside every block cannot be compiled); use ZeRO-1/2, DDP or FSDP2 with compile")
            compile_blocks(self.model, **kwargs)
            if not all(compiled_blocks(self.model)):
                raise RuntimeError(f"torch_compile is true but blocks {compiled_blocks(self.model)} are not all compiled")

    # --- growth --------------------------------------------------------------------------------
    def _grow_model(self, depth: int, optimizer) -> list:
        g = self.growth_config
        return grow(self.model, depth, g.operator, g.init, optimizer, beta=g.beta, block=g.block,
                    optimizer_state=g.optimizer_state)

    def _grow_structure(self, depth: int) -> None:
        """Give the model the structure of ``depth`` layers; its weights come from a checkpoint next."""
        if any(hasattr(p, "ds_id") for p in self.model.parameters()):
            # Partitioned by ZeRO-3's zero.Init: surgery on placeholders is meaningless; rebuild the
            # model (partitioned again by zero.Init) from the grown config instead.
            g = self.growth_config
            self.model = self.model_wrapped = build_grown(self.model, plan(self.model, depth, g.operator, g.init, g.block))
        else:
            self._grow_model(depth, optimizer=None)

    def _recent_train_loss(self) -> float | None:
        """Mean training loss of the steps since the last log (all at the old depth), this process."""
        steps = self.state.global_step - self._globalstep_last_logged
        if steps > 0:
            return self._tr_loss.item() / steps
        return next((h["loss"] for h in reversed(self.state.log_history) if "loss" in h), None)

    def grow_now(self, depth: int) -> dict:
        """Grow the running model (and its optimizer / wrapper / engine) to ``depth``."""
        start = time.perf_counter()
        from_depth = current_depth(self.model)
        if self.is_deepspeed_enabled:
            from .deepspeed import grow_engine

            mapping = grow_engine(self, depth)
        elif self.is_fsdp_enabled:  # FSDP2 grows in place: same model, optimizer and scheduler objects
            from .fsdp import grow_fsdp

            g = self.growth_config
            mapping = grow_fsdp(self.model, depth, self.optimizer, operator=g.operator, init=g.init, beta=g.beta,
                                block=g.block, optimizer_state=g.optimizer_state)
        else:
            mapping = self._grow_model(depth, self.optimizer)
            if self.model_wrapped is not self.model:  # DDP registered its hooks on the old parameters
                acc, old = self.accelerator, self.model_wrapped
                acc._models = [m for m in acc._models if m is not old]
                with self._whole_model_compile_off():
                    self.model_wrapped = acc.prepare_model(self.model)
                # The Trainer's loop enters no_sync(old wrapper) on gradient-accumulation micro-steps:
                # forward it to whichever wrapper is current, so accumulation still skips all-reduces.
                old.no_sync = lambda: self.model_wrapped.no_sync()
        self._apply_block_settings()  # new blocks: compiled and checkpointed like the others
        g = self.growth_config
        event = {"step": self.state.global_step, "from_depth": from_depth, "to_depth": depth, "operator": g.operator,
                 "init": g.init, "beta": g.beta, "optimizer_state": g.optimizer_state, "mapping": mapping,
                 "seconds": time.perf_counter() - start, "params": count_params(self.model),
                 "loss_before": self._recent_train_loss(),
                 **{k.split("/")[1]: v for k, v in self.compute_at(self.state.global_step).items()}}
        if self.is_world_process_zero():
            _say(f"[growth] step {event['step']}: depth {from_depth} -> {depth} ({g.operator}, {g.init}) "
                 f"in {event['seconds']:.2f} s, {event['params']:,} params")
        return event


class GrowthCallback(TrainerCallback):
    """Decides *when*: after each optimizer step, grows to the schedule's depth for that step.
    Also applies the optional LR re-warmup, a function of the steps since the last growth."""

    def __init__(self, trainer: GrowingTrainerMixin):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        t, warm = self.trainer, self.trainer.growth_config.rewarmup_steps
        if not warm or t.growth_steps is None:
            return
        last = max((p for p, _ in t.growth_steps.points if p <= state.global_step), default=None)
        if last is not None and state.global_step - last < warm:
            factor = (state.global_step - last + 1) / (warm + 1)
            for group, lr in zip(t.optimizer.param_groups, t.lr_scheduler.get_last_lr()):
                group["lr"] = lr * factor  # the scheduler recomputes lr from its base next step

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        target = t.growth_steps.depth_at(state.global_step)
        if target > current_depth(t.model):
            event = t.grow_now(target)
            for cb in t.callback_handler.callbacks:
                if hasattr(cb, "on_growth"):
                    cb.on_growth(args, state, event)


class RunLogCallback(TrainerCallback):
    """Writes ``metrics.jsonl`` and ``growth_events.jsonl`` into ``output_dir`` (main process only).

    On resume, lines past the checkpoint's step are dropped, so the files read as one
    uninterrupted run."""

    def __init__(self, output_dir: str):
        self.dir = output_dir
        self.wall_offset = 0.0
        self.start = time.time()

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _truncate(self, name, step):
        kept = []
        if step > 0 and os.path.exists(self._path(name)):
            with open(self._path(name)) as f:
                kept = [json.loads(line) for line in f if line.strip()]
            kept = [r for r in kept if r.get("step", 0) <= step]
        with open(self._path(name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        return kept

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        os.makedirs(self.dir, exist_ok=True)
        kept = self._truncate(METRICS_FILE, state.global_step)
        self._truncate(EVENTS_FILE, state.global_step)
        self.wall_offset = max((r.get("wall_time", 0.0) for r in kept), default=0.0)
        self.start = time.time()

    def _append(self, name, record):
        with open(self._path(name), "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_growth(self, args, state, event):
        if state.is_world_process_zero:
            self._append(EVENTS_FILE, {**event, "wall_time": self.wall_offset + time.time() - self.start})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & logs.keys()):
            return
        record = {"step": state.global_step, "wall_time": self.wall_offset + time.time() - self.start}
        for key, value in logs.items():
            record[key.split("/", 1)[1] if key.startswith(("growth/", "compute/")) else key] = value
        self._append(METRICS_FILE, record)


def enable_growth(trainer: Trainer, growth: GrowthConfig | dict, *, seq_len: int | None = None,
                  run_log: bool = True) -> Trainer:
    """Add depth growth to ``trainer`` (any Trainer subclass) in place; returns it.

    ``seq_len`` (tokens per sequence, for tokens / FLOPs accounting) defaults to the length of
    the first training example. ``run_log`` writes metrics.jsonl / growth_events.jsonl.
    """
    if not isinstance(trainer, Trainer):
        raise ValueError(f"enable_growth needs a transformers.Trainer, got {type(trainer).__name__}")
    config = growth if isinstance(growth, GrowthConfig) else GrowthConfig(**growth)
    depth = current_depth(trainer.model)  # also rejects unsupported families, before any compute
    if getattr(trainer, "is_deepspeed_enabled", False):
        from .deepspeed import check_growth_config

        check_growth_config(config)  # what ZeRO cannot do as the other backends do ("fresh" state)
    if config.schedule is not None and config.schedule.initial_depth != depth:
        raise ValueError(f"growth.schedule.initial_depth is {config.schedule.initial_depth} but the model has {depth} layers")
    if not isinstance(trainer, GrowingTrainerMixin):
        cls = type(trainer)
        trainer.__class__ = type(f"Growing{cls.__name__}", (GrowingTrainerMixin, cls), {})
    trainer.growth_config = config
    trainer._growth_seq_len = seq_len
    trainer.add_callback(GrowthCallback(trainer))
    if run_log:
        trainer.add_callback(RunLogCallback(trainer.args.output_dir))
    return trainer
