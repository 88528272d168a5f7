"""torch.compile and activation checkpointing that follow the model across growth.

Both are per-block properties of a HF model, and a growth event makes blocks that lack them:

* **compile.** Blocks are compiled one by one, in place (``nn.Module.compile``: names, parameters
  and hooks stay the same, as torchtitan and accelerate's regional compilation do). A copy made
  by ``deepcopy`` drops the compiled call (``nn.Module.__getstate__`` leaves out
  ``_compiled_call_impl``) and a fresh block never had one, so after growth the new blocks would
  run eager: ``compile_blocks`` compiles every block that is not compiled yet. Every block of a
  family runs the same code on tensors of the same shapes (its parameters are graph inputs), so
  dynamo reuses the graph it traced for the first block: a growth event compiles nothing new
  (llama: one graph for every block at every depth). Whole-model compilation instead traces a
  graph unrolled over the block list, so each growth event would recompile all of it, and past
  ``torch._dynamo.config.recompile_limit`` events it would silently run eager.
  Blocks compile with ``fullgraph=True`` (a graph break raises instead of running part of the
  block eagerly) and ``fail_on_recompile_limit_hit`` is set (a block that needs more graphs than
  the limit raises instead of falling back to eager). The embeddings, final norm and head run
  eagerly, at every depth alike.
* **checkpointing.** HF checkpoints a ``GradientCheckpointingLayer`` when its
  ``gradient_checkpointing`` attribute is set, which ``activation_checkpointing_enable`` does once
  for the blocks that exist. A copy inherits its source's flag (wrong with ``every_n_layers > 1``:
  positions move), a fresh block or a rebuilt model has none. ``checkpoint_blocks`` gives every
  block what a fresh model of the new depth would get from the same settings.

Plain functions over a model: the Trainer adapter (growth/trainer.py) decides when.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .families import family_of


def compiled_blocks(model: nn.Module) -> list[bool]:
    """Per block position: whether it runs through ``torch.compile`` (compiled in place)."""
    return [layer._compiled_call_impl is not None for layer in family_of(model).layers(model)]


def compile_blocks(model: nn.Module, **compile_kwargs) -> list[int]:
    """Compile, in place, every block of ``model`` not compiled yet; returns their positions.

    ``compile_kwargs`` go to ``torch.compile`` (backend, mode, dynamic, options); ``fullgraph``
    defaults to True."""
    compile_kwargs = {"fullgraph": True, **compile_kwargs}
    # A recompile past the limit would make dynamo run the block eagerly, silently: raise instead.
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    done = []
    for i, layer in enumerate(family_of(model).layers(model)):
        if layer._compiled_call_impl is None:
            layer.compile(**compile_kwargs)
            done.append(i)
    return done


def _checkpointed_modules(layer: nn.Module) -> list[nn.Module]:
    # Modules whose forward HF wraps with checkpointing (GradientCheckpointingLayer and older
    # ones carrying the flag); the block itself in every family supported here.
    return [m for m in layer.modules() if hasattr(m, "gradient_checkpointing")]


def checkpoint_function(model: nn.Module) -> Callable | None:
    """The checkpoint function the model's blocks were given (``activation_checkpointing_enable``),
    or None when no block is checkpointed."""
    for layer in family_of(model).layers(model):
        for m in _checkpointed_modules(layer):
            if m.gradient_checkpointing and "_gradient_checkpointing_func" in vars(m):
                return m._gradient_checkpointing_func
    return None


def checkpoint_blocks(model: nn.Module, function: Callable, every_n_layers: int = 1) -> list[int]:
    """Checkpoint every ``every_n_layers``-th block of ``model`` with ``function``, the others not,
    as ``activation_checkpointing_enable`` does on a fresh model; returns the checkpointed positions."""
    if every_n_layers < 1:
        raise ValueError(f"every_n_layers must be positive, got {every_n_layers}")
    on = []
    for i, layer in enumerate(family_of(model).layers(model)):
        modules = _checkpointed_modules(layer)
        if not modules:
            raise ValueError(f"{type(layer).__name__} does not support activation checkpointing")
        for m in modules:
            m._gradient_checkpointing_func = function
            m.gradient_checkpointing = i % every_n_layers == 0
        if i % every_n_layers == 0:
            on.append(i)
    return on
