"""Growth and compute in wandb and TensorBoard, through the Trainer's own reporting callbacks.

    trainer = enable_growth(trainer, recipe.growth)
    attach_reporting(trainer, recipe.to_dict(), recipe.label, ["family:llama"])

The Trainer already reports ``compute/flops``, ``compute/tokens``, ``growth/depth`` and
``growth/params`` with every log once ``enable_growth`` is on (GrowingTrainerMixin.log adds them
before the callbacks run; wandb and TensorBoard see them as ``train/compute/flops``...). This adds:

- wandb: the run grouped by schedule (``label``) and tagged (WANDB_RUN_GROUP / WANDB_TAGS, set
  here because the HF WandbCallback calls ``wandb.init`` in its own ``on_train_begin``); the whole
  recipe in the run config; ``train/compute/flops`` as the default x-axis of every train/*, eval/*
  and growth/* chart (``define_metric``; the step stays selectable).
- each growth event, in wandb and TensorBoard: ``growth/event_step``, ``growth/from_depth``,
  ``growth/to_depth``, ``growth/seconds``, ``growth/loss_before``, ``growth/event_flops`` (and the
  operator / init as text, and in the wandb summary ``growth/events``);
- ``growth/loss_after``: the mean training loss of the first ``loss_after_logs`` training logs
  after the event (fewer if the run ends first), and ``growth/loss_change`` = after - before.

Events are written straight to the wandb run and the TensorBoard callback's writer: calling
``trainer.log`` from a callback would run every callback again. Everything is a no-op for a
backend not in ``report_to``, and on processes other than the main one.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback

X_AXIS = "train/compute/flops"  # what the HF WandbCallback makes of our "compute/flops"
EVENT_FIELDS = ("step", "from_depth", "to_depth", "seconds", "loss_before", "flops", "tokens", "params")


def _wandb_run():
    try:
        import wandb
    except ImportError:
        return None
    return wandb.run


class GrowthReportingCallback(TrainerCallback):
    """Must come after the HF WandbCallback / TensorBoardCallback (``attach_reporting`` adds it last)."""

    def __init__(self, trainer: Trainer, recipe: dict | None = None, loss_after_logs: int = 5):
        if loss_after_logs < 1:
            raise ValueError(f"loss_after_logs: must be at least 1, got {loss_after_logs}")
        self.trainer = trainer
        self.recipe = recipe
        self.loss_after_logs = loss_after_logs
        self.pending: list[dict] = []  # events still collecting their loss_after
        self.events: list[dict] = []

    def _uses(self, backend: str) -> bool:
        return backend in (self.trainer.args.report_to or [])

    def _tb_writer(self):
        for cb in self.trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
                return cb.tb_writer
        return None

    def _emit(self, state, scalars: dict[str, float], text: dict[str, str] | None = None) -> None:
        """Write ``scalars`` (and ``text``) at the current step to every active backend."""
        run = _wandb_run() if self._uses("wandb") else None
        if run is not None:
            x = self.trainer.compute_at(state.global_step)["compute/flops"] if hasattr(self.trainer, "compute_at") else None
            row = {**scalars, **(text or {}), "train/global_step": state.global_step}
            if x is not None:
                row[X_AXIS] = x
            run.log(row)
        writer = self._tb_writer() if self._uses("tensorboard") else None
        if writer is not None:
            for k, v in scalars.items():
                writer.add_scalar(k, v, state.global_step)
            for k, v in (text or {}).items():
                writer.add_text(k, v, state.global_step)
            writer.flush()

    def on_train_begin(self, args, state, control, **kwargs):
        run = _wandb_run() if self._uses("wandb") and state.is_world_process_zero else None
        if run is None:
            return
        run.define_metric(X_AXIS)
        for pattern in ("train/*", "eval/*", "growth/*"):
            run.define_metric(pattern, step_metric=X_AXIS, step_sync=True)
        if self.recipe is not None:
            run.config.update({"recipe": self.recipe}, allow_val_change=True)

    def on_growth(self, args, state, event):
        if not state.is_world_process_zero:
            return
        record = {k: event.get(k) for k in (*EVENT_FIELDS, "operator", "init", "beta")}
        self.events.append(record)
        self.pending.append({"event": record, "losses": []})
        scalars = {f"growth/{'event_' if k in ('step', 'flops', 'tokens') else ''}{k}": float(event[k])
                   for k in EVENT_FIELDS if k != "params" and event.get(k) is not None}
        text = {"growth/event": f"step {event['step']}: depth {event['from_depth']} -> {event['to_depth']} "
                                f"({event.get('operator')}, init {event.get('init')}) in {event['seconds']:.3f} s"}
        self._emit(state, scalars, text)
        run = _wandb_run() if self._uses("wandb") else None
        if run is not None:
            run.summary["growth/events"] = self.events

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        for p in list(self.pending):
            if state.global_step > p["event"]["step"]:
                p["losses"].append(float(logs["loss"]))
                # At the last step, before TensorBoardCallback.on_train_end closes its writer.
                if len(p["losses"]) >= self.loss_after_logs or state.global_step >= state.max_steps:
                    self._finish(state, p)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            for p in [p for p in self.pending if p["losses"]]:  # the last step was not logged: wandb only
                self._finish(state, p)

    def _finish(self, state, p: dict) -> None:
        self.pending.remove(p)
        event = p["event"]
        event["loss_after"] = sum(p["losses"]) / len(p["losses"])
        event["loss_after_logs"] = len(p["losses"])
        scalars = {"growth/loss_after": event["loss_after"], "growth/loss_after_logs": float(len(p["losses"]))}
        if event.get("loss_before") is not None:
            scalars["growth/loss_change"] = event["loss_after"] - event["loss_before"]
        self._emit(state, scalars)
        run = _wandb_run() if self._uses("wandb") else None
        if run is not None:
            run.summary["growth/events"] = self.events


_ENV_SET: dict[str, str] = {}  # what attach_reporting put into os.environ, by key


def _set_env(key: str, value: str) -> None:
    """Set ``key`` unless the user did: a value this module set for an earlier run in the same
    process (eval/study.py and eval/sweep.py train run after run in one process) is replaced."""
    if key not in os.environ or os.environ[key] == _ENV_SET.get(key):
        os.environ[key] = _ENV_SET[key] = value


def attach_reporting(trainer: Trainer, recipe: dict | None = None, label: str | None = None,
                     tags: list[str] | tuple[str, ...] = (), loss_after_logs: int = 5) -> GrowthReportingCallback:
    """Report growth to the trainer's wandb / TensorBoard; call after ``enable_growth``, before ``train``.

    ``label`` groups the wandb run (runs of one schedule over seeds share it) and is a tag, with
    ``tags``; ``recipe`` goes into the wandb config as ``recipe``. Sets WANDB_RUN_GROUP and
    WANDB_TAGS in this process's environment when wandb is in report_to (a value the user set is
    kept; one set here for an earlier run in the process is replaced).
    """
    if not isinstance(trainer, Trainer):
        raise ValueError(f"attach_reporting needs a transformers.Trainer, got {type(trainer).__name__}")
    if "wandb" in (trainer.args.report_to or []):
        all_tags: list[Any] = list(dict.fromkeys([*([label] if label else []), *tags]))
        if label:
            _set_env("WANDB_RUN_GROUP", label)
        if all_tags:
            _set_env("WANDB_TAGS", ",".join(map(str, all_tags)))
    callback = GrowthReportingCallback(trainer, recipe, loss_after_logs)
    trainer.add_callback(callback)
    return callback
