"""Running a recipe end to end: the logic behind scripts/train.py.

    recipe -> TrainingArguments -> output_dir check -> tokenizer + packed data (main process first)
    -> model -> Trainer -> enable_growth -> train -> final eval -> save model + tokenizer

Writes into ``output_dir``: ``recipe.yaml`` (the resolved recipe, overrides included) and
``run.json`` at the start (``run.json`` again at the end with the final numbers), and, through
growth/trainer.py, ``metrics.jsonl`` and ``growth_events.jsonl``; checkpoints as the Trainer saves
them; the final model and tokenizer in HF format.

A baseline runs through ``enable_growth`` too, with no schedule: it never grows, but its
metrics carry the same tokens / FLOPs accounting as the growth runs it is compared with.

Nothing is rank-specific except that data is built on the main process first, and that files
are written by the main process, so the same code runs under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .recipe import (
    SECTIONS,
    TOP_LEVEL,
    Recipe,
    admits_str,
    field_help,
    load_recipe,
    parse_overrides,
    parse_value,
    parse_yaml,
    section_fields,
    type_hints,
)

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"


@dataclass
class RunOptions:
    """What one invocation does with its output_dir; not part of the recipe."""

    resume_from_checkpoint: str | bool | None = None  # a checkpoint dir, or True: the last one in output_dir
    overwrite_output_dir: bool = False  # allow a non-empty output_dir; its checkpoint-* dirs are removed


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """Every recipe field and TrainingArguments field as an option, with its help text."""
    p = argparse.ArgumentParser(
        prog="train.py", usage="%(prog)s --config RECIPE.yaml [--FIELD VALUE ...]", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a recipe with gradual depth growth. Any field below overrides the recipe's value; "
                    "values are YAML (e.g. --growth.schedule '{initial_depth: 2, unit: fraction, points: [[0.5, 4]]}'). "
                    "Deeper paths work too: --growth.schedule.points '[[0.3, 4], [0.6, 6]]'.")
    run = p.add_argument_group("run")
    run.add_argument("--config", required=True, help="recipe YAML file, e.g. recipes/tiny.yaml")
    run.add_argument("--resume_from_checkpoint", default=None, metavar="PATH|true",
                     help="continue a run: a checkpoint directory, or true for the last checkpoint in output_dir")
    run.add_argument("--overwrite_output_dir", default="false", nargs="?", const="true", metavar="BOOL",
                     help="allow a non-empty output_dir (its checkpoint-* directories are removed first)")

    top = p.add_argument_group("recipe")
    hints = type_hints(None)
    for f in dataclasses.fields(Recipe):
        if f.name not in SECTIONS and f.name != "training":
            _add(top, f"--{f.name}", f.name, hints[f.name], field_help(Recipe, f))
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(section, f"{cls.__module__}.{cls.__name__}")
        hints = type_hints(section)
        for name, f in section_fields(section).items():
            _add(group, f"--{section}.{name}", f"{section}.{name}", hints[name], field_help(cls, f))
    from transformers import TrainingArguments

    group = p.add_argument_group("training", "transformers.TrainingArguments (also as --training.NAME)")
    hints = type_hints("training")
    for name, f in section_fields("training").items():
        if name in TOP_LEVEL:
            continue
        _add(group, f"--{name}", f"training.{name}", hints[name], field_help(TrainingArguments, f), f"--training.{name}")
    return p


def _add(group, flag: str, dest: str, hint, help_text: str, *aliases: str) -> None:
    is_bool = hint is bool or (admits_bool(hint) and not admits_str(hint))
    group.add_argument(flag, *aliases, dest=dest, default=argparse.SUPPRESS, metavar=_metavar(hint),
                       nargs="?" if is_bool else None, const="true" if is_bool else None,
                       help=help_text.replace("%", "%%"))


def admits_bool(hint) -> bool:
    return hint is bool or bool in typing.get_args(hint)


def _metavar(hint) -> str:
    names = []
    for arm in typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,):
        origin = typing.get_origin(arm) or arm
        if arm is type(None):
            continue
        if origin is typing.Literal:
            names.append("|".join(map(str, typing.get_args(arm))))
        elif isinstance(arm, type) and issubclass(arm, enum.Enum):
            names.append("NAME")
        elif dataclasses.is_dataclass(arm) or origin is dict:
            names.append("MAPPING")
        else:
            names.append(getattr(origin, "__name__", str(origin)))
    return "|".join(dict.fromkeys(n.upper() for n in names)) or "VALUE"


def parse_args(argv: list[str] | None = None) -> tuple[Recipe, RunOptions]:
    """Recipe (file + overrides) and run options from a command line; ValueError on a bad recipe."""
    ns, rest = build_parser().parse_known_args(argv)
    given = vars(ns)
    run_keys = ("config", "resume_from_checkpoint", "overwrite_output_dir")
    overrides: dict[str, Any] = {k: parse_value(k, v) for k, v in given.items() if k not in run_keys}
    overrides.update(parse_overrides(rest))  # deeper paths (growth.schedule.points) and unknown keys
    recipe = load_recipe(ns.config, overrides)
    resume = ns.resume_from_checkpoint
    if resume is not None:
        value = parse_yaml(resume)
        resume = None if value is False else True if value is True else resume
    overwrite = parse_yaml(ns.overwrite_output_dir)
    if not isinstance(overwrite, bool):
        raise ValueError(f"--overwrite_output_dir: expected true or false, got {ns.overwrite_output_dir!r}")
    return recipe, RunOptions(resume_from_checkpoint=resume, overwrite_output_dir=overwrite)


# ---------------------------------------------------------------------------------------------
# Steps of a run


def training_arguments(recipe: Recipe):
    from transformers import TrainingArguments

    kwargs = {"run_name": recipe.name, **recipe.training_arguments_kwargs(), "seed": recipe.seed}
    # Every parameter of a supported causal LM takes part in every step, before and after growth, so
    # DDP need not search each step's autograd graph for unused ones (the Trainer's default for HF
    # models). A model that has unused parameters fails loudly in DDP; set it true in the recipe then.
    kwargs.setdefault("ddp_find_unused_parameters", False)
    # Under `accelerate launch` with a DeepSpeed config on a machine without GPU (tests, CI), the
    # process group and accelerate's state must be set up by hand (growth/distributed.py).
    ds_config = kwargs.get("deepspeed") or (os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
                                            if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None)
    from .distributed import cpu_distributed_shim, fsdp_requested

    if cpu_distributed_shim(deepspeed=bool(ds_config), fsdp=fsdp_requested(kwargs)):
        kwargs["deepspeed"] = ds_config
        kwargs["accelerator_config"] = {**(kwargs.get("accelerator_config") or {}), "use_configured_state": True}
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"recipe {recipe.name}: training: {e}") from None


def check_output_dir(output_dir: str | Path, options: RunOptions, main: bool = True) -> str | None:
    """Refuse to write into a non-empty output_dir unless resuming or told to overwrite.

    Returns a line for the log when an existing directory is taken over. Only ``main`` removes
    old checkpoints when overwriting (every rank checks)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir: {str(out)!r} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return None
    if options.resume_from_checkpoint:
        return f"resuming in existing output_dir {out}"
    if options.overwrite_output_dir:
        stale = [out / name for name in entries if name.startswith("checkpoint-")]
        for path in stale if main else ():  # a later `--resume_from_checkpoint true` must not find them
            shutil.rmtree(path)
        return (f"overwriting output_dir {out} (--overwrite_output_dir true): removed {len(stale)} old checkpoint(s); "
                f"other files are replaced as the run writes them")
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise ValueError(f"output_dir: {str(out)!r} is not empty ({len(entries)} entries: {shown}); "
                     "pass --resume_from_checkpoint PATH|true to continue that run, --overwrite_output_dir true "
                     "to replace it, or choose another --output_dir")


def build_data(recipe: Recipe):
    """(tokenizer, train dataset, eval dataset or None) for the recipe; cached under data.cache_dir."""
    from .data import build_datasets, build_tokenizer, load_documents

    texts = load_documents(recipe.data)[0] if recipe.tokenizer.train_bpe else None
    tokenizer = build_tokenizer(recipe.tokenizer, texts, recipe.data.cache_dir)
    # Prepared: memory-mapped blocks; streaming (data.streaming): an IterableDataset read on the fly.
    train, validation = build_datasets(recipe.data, tokenizer)
    return tokenizer, train, (validation if validation is not None and len(validation) else None)


def run_info(recipe: Recipe, max_steps: int) -> dict:
    g = recipe.growth
    derived = [f"family:{recipe.model.family or recipe.model.name_or_path}"]
    derived += ["baseline"] if recipe.baseline else [f"operator:{g.operator}", f"init:{g.init}"]
    return {"name": recipe.name, "label": recipe.label, "seed": recipe.seed, "baseline": recipe.baseline,
            "max_steps": max_steps, "tags": [*recipe.tags, *derived], "recipe": recipe.to_dict()}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run(recipe: Recipe, options: RunOptions | None = None) -> dict:
    """Train ``recipe``; returns the final run.json content."""
    import datasets
    import transformers

    from .config import GrowthConfig
    from .grow import current_depth
    from .models import build_model
    from .reporting import attach_reporting
    from .trainer import count_params, enable_growth

    options = options or RunOptions()
    args = training_arguments(recipe)  # also sets up the process group under a launcher
    main = args.process_index == 0
    say = print if main else (lambda *a, **k: None)
    out = Path(args.output_dir)
    note = check_output_dir(out, options, main=False)  # on every rank, before the main process writes anything
    with args.main_process_first(local=False, desc="output dir check"):
        pass  # a barrier: no rank checks after the main process has written
    if main:
        note = check_output_dir(out, options)  # now removes what overwriting removes
    if note:
        say(f"[run] {note}", flush=True)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        previous = out / RECIPE_FILE
        if options.resume_from_checkpoint and previous.exists() and parse_yaml(previous.read_text()) != recipe.to_dict():
            logger.warning("the recipe differs from the one %s was started with; recipe.yaml now holds this one", out)
        previous.write_text(recipe.to_yaml())
        _write_json(out / RUN_FILE, run_info(recipe, args.max_steps))
    say(f"[run] {recipe.name} (label {recipe.label}, seed {recipe.seed}) -> {out}", flush=True)

    datasets.disable_progress_bars()
    start = time.time()
    with args.main_process_first(desc="tokenizer and data"):
        tokenizer, train_ds, eval_ds = build_data(recipe)
    from .data import data_summary

    say(f"[run] data: {data_summary(train_ds, eval_ds)} of "
        f"{recipe.data.block_size} tokens, vocab {len(tokenizer)} ({time.time() - start:.1f} s)", flush=True)

    transformers.set_seed(recipe.seed)
    model = build_model(recipe.model, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    schedule = recipe.growth.schedule
    plan = "baseline, no growth" if recipe.baseline else (
        f"growth {schedule.to_dict()} ({recipe.growth.operator}, {recipe.growth.init})" if schedule else "no growth")
    say(f"[run] model: {model.config.model_type}, depth {current_depth(model)}, {count_params(model):,} params; {plan}",
        flush=True)

    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                   data_collator=transformers.default_data_collator, processing_class=tokenizer)
    growth_config = GrowthConfig() if recipe.baseline else recipe.growth  # a baseline keeps the accounting
    enable_growth(trainer, growth_config, seq_len=recipe.data.block_size)
    attach_reporting(trainer, recipe.to_dict(), recipe.label, run_info(recipe, args.max_steps)["tags"])
    train_result = trainer.train(resume_from_checkpoint=options.resume_from_checkpoint)

    final_eval = None
    if eval_ds is not None:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        if evals and evals[-1]["step"] == trainer.state.global_step:
            final_eval = evals[-1]  # the last periodic evaluation already ran at the final step
        else:
            final_eval = trainer.evaluate()
    trainer.save_model(str(out))
    trainer.save_state()
    info = run_info(recipe, trainer.state.max_steps)
    info.update({"global_step": trainer.state.global_step, "final_depth": current_depth(trainer.model),
                 "final_params": count_params(trainer.model), "train_loss": train_result.training_loss,
                 "final_eval_loss": final_eval["eval_loss"] if final_eval else None,
                 "train_runtime_s": train_result.metrics.get("train_runtime")})
    if main:
        tokenizer.save_pretrained(str(out))
        _write_json(out / RUN_FILE, info)
    loss = f"{info['final_eval_loss']:.4f}" if final_eval else "n/a"
    say(f"[run] done: step {info['global_step']}, depth {info['final_depth']}, final eval_loss {loss}; "
        f"model and tokenizer saved to {out}", flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    main_rank = os.environ.get("RANK", "0") == "0"  # set by launchers; TrainingArguments does not exist yet
    logging.basicConfig(format="[%(name)s] %(message)s", level=logging.INFO if main_rank else logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.WARNING)
    try:
        recipe, options = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        run(recipe, options)
    except ValueError as e:
        if not str(e).startswith(("recipe ", "output_dir:")):
            raise  # not a setup problem: keep the traceback
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
