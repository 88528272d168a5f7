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
import re
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

from .safety import STAGING, StartError

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"


@dataclass
class RunOptions:
    """What one invocation does with its output_dir; not part of the recipe."""

    resume_from_checkpoint: str | bool | None = None  # a checkpoint dir, or True: the newest complete one in output_dir
    overwrite_output_dir: bool = False  # allow a non-empty output_dir; its checkpoint-* dirs are removed once the run starts
    allow_recipe_change: bool = False  # resume although the recipe differs from the checkpoint's where it shapes the run


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
                     help="continue a run: a checkpoint directory, or true for the newest complete checkpoint in output_dir")
    run.add_argument("--overwrite_output_dir", default="false", nargs="?", const="true", metavar="BOOL",
                     help="allow a non-empty output_dir (its checkpoint-* directories are removed once the run has "
                          "validated everything and starts)")
    run.add_argument("--allow_recipe_change", default="false", nargs="?", const="true", metavar="BOOL",
                     help="resume even though the recipe differs from the checkpoint's in fields that shape the model, "
                          "the data or the schedule (run.json records the change)")

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
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):  # `--learning_rate -1e-3`: argparse would take -1e-3 for an option
        if argv[i].startswith("--") and "=" not in argv[i] and re.match(r"^-(\d|\.\d)", argv[i + 1]):
            argv[i], argv[i + 1] = f"{argv[i]}={argv[i + 1]}", ""
    ns, rest = build_parser().parse_known_args([a for a in argv if a != ""])
    given = vars(ns)
    run_keys = ("config", "resume_from_checkpoint", "overwrite_output_dir", "allow_recipe_change")
    overrides: dict[str, Any] = {k: parse_value(k, v) for k, v in given.items() if k not in run_keys}
    overrides.update(parse_overrides(rest))  # deeper paths (growth.schedule.points) and unknown keys
    recipe = load_recipe(ns.config, overrides)
    resume = ns.resume_from_checkpoint
    if resume is not None:
        value = parse_yaml(resume)
        resume = None if value is False else True if value is True else resume
    flags = {}
    for name in ("overwrite_output_dir", "allow_recipe_change"):
        raw = getattr(ns, name)
        flags[name] = parse_yaml(raw)
        if not isinstance(flags[name], bool):
            raise ValueError(f"--{name}: expected true or false, got {raw!r}")
    if resume and flags["overwrite_output_dir"]:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir true: choose one "
                         "(overwriting removes the checkpoints a resume continues from)")
    return recipe, RunOptions(resume_from_checkpoint=resume, **flags)


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


def check_output_dir(output_dir: str | Path, options: RunOptions) -> tuple[str | None, list[Path]]:
    """Refuse a non-empty output_dir unless resuming or told to overwrite. Reads only.

    Returns a line for the log when an existing directory is taken over, and the old
    checkpoints that overwriting removes (the run removes them once it has validated everything)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise StartError(f"output_dir: {str(out)!r} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return None, []
    if options.resume_from_checkpoint:
        return f"resuming in existing output_dir {out}", []
    if options.overwrite_output_dir:
        stale = [out / name for name in entries if name.startswith("checkpoint-") or name == STAGING]
        return (f"overwriting output_dir {out} (--overwrite_output_dir true): its {len(stale)} old checkpoint(s) are "
                f"removed when training starts; other files are replaced as the run writes them"), stale
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise StartError(f"output_dir: {str(out)!r} is not empty ({len(entries)} entries: {shown}); "
                     "pass --resume_from_checkpoint PATH|true to continue that run, --overwrite_output_dir true "
                     "to replace it, or choose another --output_dir")


def build_data(recipe: Recipe, check_tokenizer=None):
    """(tokenizer, train dataset, eval dataset or None) for the recipe; cached under data.cache_dir.
    ``check_tokenizer(tokenizer)`` runs before the data is prepared (checks that need the vocab)."""
    from .data import build_datasets, build_tokenizer, load_documents

    texts = load_documents(recipe.data)[0] if recipe.tokenizer.train_bpe else None
    tokenizer = build_tokenizer(recipe.tokenizer, texts, recipe.data.cache_dir)
    if check_tokenizer is not None:
        check_tokenizer(tokenizer)
    # Prepared: memory-mapped blocks; streaming (data.streaming): an IterableDataset read on the fly.
    train, validation = build_datasets(recipe.data, tokenizer)
    return tokenizer, train, (validation if validation is not None and len(validation) else None)


def _schedule_error(e: ValueError, max_steps: int, tokens_per_step: int) -> StartError:
    where = "" if str(e).startswith("growth.") else "growth.schedule."
    return StartError(f"{where}{_one_line(e)} (max_steps {max_steps}, {tokens_per_step} tokens per step)")


def check_schedule_fits(recipe: Recipe, args, tokenizer) -> None:
    """Growth points in tokens, FLOPs or fractions resolved to steps from the recipe alone (the
    model's config, not its weights), so a point past the end of the run is refused before the
    data is prepared; the Trainer resolves them again, from the built model, before step 1."""
    from .flops import training_flops_per_token
    from .models import build_config
    from .trainer import tokens_per_step as step_tokens

    schedule = recipe.growth.schedule
    if recipe.baseline or schedule is None or args.max_steps <= 0:  # epochs: steps known once data is built
        return
    seq = recipe.data.block_size
    tokens_per_step = step_tokens(args, seq)
    try:
        config = build_config(recipe.model, len(tokenizer))
    except (OSError, ValueError):
        return  # reported with its own message when the model is built
    try:
        schedule.to_steps(args.max_steps, tokens_per_step, lambda d: training_flops_per_token(config, seq, d))
    except ValueError as e:
        raise _schedule_error(e, args.max_steps, tokens_per_step) from None


def run_info(recipe: Recipe, max_steps: int) -> dict:
    g = recipe.growth
    derived = [f"family:{recipe.model.family or recipe.model.name_or_path}"]
    derived += ["baseline"] if recipe.baseline else [f"operator:{g.operator}", f"init:{g.init}"]
    return {"name": recipe.name, "label": recipe.label, "seed": recipe.seed, "baseline": recipe.baseline,
            "max_steps": max_steps, "tags": [*recipe.tags, *derived], "recipe": recipe.to_dict()}


def _write_json(path: Path, obj) -> None:
    from .safety import write_atomic

    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@dataclass
class _Resume:
    """What a resume continues from, all read (and checked) before anything is written."""

    checkpoint: Path
    step: int
    previous_recipe: str | None  # the recipe.yaml the checkpoint was written with, if recorded
    changes: dict


def _recorded_recipe(ckpt: Path) -> str | None:
    for path in (ckpt / RECIPE_FILE, ckpt.parent / RECIPE_FILE):
        if path.is_file():
            return path.read_text()
    return None


def _check_resume(recipe: Recipe, options: RunOptions, out: Path, say) -> _Resume:
    from .recipe import recipe_from_dict
    from .safety import checkpoint_step, describe_changes, recipe_changes, resolve_checkpoint

    ckpt, line = resolve_checkpoint(options.resume_from_checkpoint, out)
    say(f"[run] {line}", flush=True)
    previous = _recorded_recipe(ckpt)
    changes = {}
    if previous is None:
        say(f"[run] note: no recipe.yaml recorded with {ckpt}: the recipe cannot be compared", flush=True)
    else:
        old = parse_yaml(previous)
        try:  # through the current loader, so fields added since then compare as their defaults
            old = recipe_from_dict(old).to_dict()
        except ValueError:
            pass
        changes = recipe_changes(old, recipe.to_dict())
    if changes and not options.allow_recipe_change:
        raise StartError(f"--resume_from_checkpoint: the recipe differs from the one {ckpt} was written with, in "
                         f"fields that shape the model, the data or the schedule: {describe_changes(changes)}; "
                         "resume with the same recipe, or pass --allow_recipe_change true (run.json records it)")
    return _Resume(ckpt, checkpoint_step(ckpt), previous, changes)


def _finished(resume: _Resume, out: Path, max_steps: int) -> dict | None:
    """run.json of the run a resume continues, when that run already reached max_steps."""
    info_path = out / RUN_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    done = info.get("global_step") if info.get("status", "finished") == "finished" else None
    target = max_steps if max_steps > 0 else json.loads((resume.checkpoint / "trainer_state.json").read_text()).get("max_steps")
    if target and (resume.step >= target or (done is not None and done >= target)):
        return {**info, "status": "finished", "global_step": max(resume.step, done or 0)}
    return None


def run(recipe: Recipe, options: RunOptions | None = None) -> dict:
    """Train ``recipe``; returns run.json's content, whose ``status`` says how the run ended.

    Everything is validated before anything is written into output_dir: a problem found on the
    way raises ``StartError`` and leaves output_dir as it was (growth/safety.py)."""
    options = options or RunOptions()
    out = Path(recipe.training["output_dir"])
    existed = out.exists()
    progress = {"started": False}
    try:
        return _run(recipe, options, progress)
    except BaseException:
        if not progress["started"] and not existed and out.is_dir() and not any(out.iterdir()):
            try:  # the Trainer creates output_dir when it is built; a refused start leaves no trace
                out.rmdir()
            except OSError:
                pass
        raise


def _run(recipe: Recipe, options: RunOptions, progress: dict) -> dict:
    import shutil

    import datasets
    import transformers

    from .config import GrowthConfig
    from .families import family_of
    from .grow import current_depth
    from .models import build_model
    from .reporting import attach_reporting
    from .safety import (RunGuard, StartRecords, StopRequest, any_rank, check_weights, newest_checkpoint,
                         nonfinite_parameters, prepare_staging, publish_files)
    from .trainer import count_params, enable_growth

    try:
        args = training_arguments(recipe)  # also sets up the process group under a launcher
    except ValueError as e:
        raise StartError(str(e)) from None
    main = args.process_index == 0
    say = print if main else (lambda *a, **k: None)
    out = Path(args.output_dir)

    # 1. Checks that read only: output_dir, the checkpoint (files, recipe), whether the run is finished.
    note, stale = check_output_dir(out, options)
    if note:
        say(f"[run] {note}", flush=True)
    resume = _check_resume(recipe, options, out, say) if options.resume_from_checkpoint else None
    if resume is not None:
        finished = _finished(resume, out, args.max_steps)
        if finished is not None:
            say(f"[run] {out} is finished (step {finished['global_step']} of {args.max_steps if args.max_steps > 0 else 'its epochs'}): "
                "nothing to do, nothing changed. To train longer, raise --max_steps and pass --allow_recipe_change true",
                flush=True)
            return finished
    say(f"[run] {recipe.name} (label {recipe.label}, seed {recipe.seed}) -> {out}", flush=True)

    # 2. Data, model, trainer: built and checked, still writing nothing into output_dir.
    datasets.disable_progress_bars()
    start = time.time()
    with args.main_process_first(desc="tokenizer and data"):
        try:
            tokenizer, train_ds, eval_ds = build_data(recipe, lambda tok: check_schedule_fits(recipe, args, tok))
        except ValueError as e:
            raise StartError(_one_line(e)) from None
    from .data import StreamingBlocks, data_summary

    if not isinstance(train_ds, StreamingBlocks) and len(train_ds) == 0:  # a stream has no length
        raise StartError(f"data.source: {recipe.data.source!r} gives no training block of data.block_size "
                         f"{recipe.data.block_size} tokens")
    say(f"[run] data: {data_summary(train_ds, eval_ds)} of "
        f"{recipe.data.block_size} tokens, vocab {len(tokenizer)} ({time.time() - start:.1f} s)", flush=True)

    transformers.set_seed(recipe.seed)
    try:
        model = build_model(recipe.model, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    except (OSError, ValueError) as e:
        where = f"model.name_or_path: cannot load {recipe.model.name_or_path!r}: " if recipe.model.name_or_path else "model: "
        raise StartError(f"{where}{_one_line(e)}") from None
    schedule = recipe.growth.schedule
    plan = "baseline, no growth" if recipe.baseline else (
        f"growth {schedule.to_dict()} ({recipe.growth.operator}, {recipe.growth.init})" if schedule else "no growth")
    say(f"[run] model: {model.config.model_type}, depth {current_depth(model)}, {count_params(model):,} params; {plan}",
        flush=True)

    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                   data_collator=transformers.default_data_collator, processing_class=tokenizer)
    growth_config = GrowthConfig() if recipe.baseline else recipe.growth  # a baseline keeps the accounting
    try:
        enable_growth(trainer, growth_config, seq_len=recipe.data.block_size)
        trainer._resolve_growth_schedule()  # tokens / FLOPs points become steps now, not at step 0
    except ValueError as e:
        raise _schedule_error(e, trainer.args.max_steps, trainer._tokens_per_step()) from None
    if resume is not None:
        check_weights(resume.checkpoint, model, trainer.growth_steps.depth_at(resume.step), family_of(model).layers_path)
    attach_reporting(trainer, recipe.to_dict(), recipe.label, run_info(recipe, args.max_steps)["tags"])

    # 3. Records, written once the Trainer has loaded the checkpoint and the weights are finite.
    info = run_info(recipe, args.max_steps)
    previous_info = json.loads((out / RUN_FILE).read_text()) if resume is not None and (out / RUN_FILE).is_file() else {}
    if resume is not None:
        entry = {"step": resume.step, "checkpoint": str(resume.checkpoint)}
        if resume.changes:
            entry.update(recipe_changes={k: list(v) for k, v in resume.changes.items()},
                         allowed_by="--allow_recipe_change true", previous_recipe=f"recipe.before-step-{resume.step}.yaml")
        info["resumes"] = [*previous_info.get("resumes", []), entry]
    info["status"] = "running"

    def write_records():
        for path in stale:  # --overwrite_output_dir: a later `--resume_from_checkpoint true` must not find them
            shutil.rmtree(path)
        if (out / STAGING).exists():  # saves interrupted in an earlier run
            shutil.rmtree(out / STAGING)
        if resume is not None and resume.changes and resume.previous_recipe is not None:
            (out / f"recipe.before-step-{resume.step}.yaml").write_text(resume.previous_recipe)
        from .safety import write_atomic

        write_atomic(out / RECIPE_FILE, recipe.to_yaml())
        _write_json(out / RUN_FILE, info)
        progress["started"] = True

    records = StartRecords(trainer, write_records)
    trainer.callback_handler.callbacks.insert(0, records)  # before any other callback writes (TensorBoard...)
    stop = StopRequest(say=lambda m: say(m, flush=True))
    guard = RunGuard(trainer, stop, recipe.safety.nonfinite_loss_steps)
    trainer.add_callback(guard)  # last: after growth and the save decision of the step
    trainer.checkpoint_files = {RECIPE_FILE: recipe.to_yaml()}

    try:
        with stop:
            train_result = trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume else None)
    except StartError:
        raise
    except BaseException as e:
        if records.started and main:
            _write_json(out / RUN_FILE, {**info, "status": "failed", "error": f"{type(e).__name__}: {_one_line(e)}"})
        raise
    progress["started"] = True

    step = trainer.state.global_step
    info["max_steps"] = trainer.state.max_steps
    if guard.stopped_by == "nonfinite":
        last, _ = newest_checkpoint(out)
        info.update(status="stopped", reason=f"non-finite training loss for {guard.bad_steps} consecutive steps "
                                            f"from step {guard.first_bad_step}", stopped_at_step=step,
                    last_good_checkpoint=str(last) if last else None)
        if main:
            _write_json(out / RUN_FILE, info)
        say(f"[run] stopped: the training loss was non-finite for {guard.bad_steps} consecutive steps (from step "
            f"{guard.first_bad_step}, safety.nonfinite_loss_steps {recipe.safety.nonfinite_loss_steps}); the model "
            f"was not saved; last good checkpoint: {last or 'none'}", flush=True)
        return info
    if guard.stopped_by == "signal":
        name = __import__("signal").Signals(guard.signum).name
        ckpt = out / f"checkpoint-{step}"
        saved = ckpt.is_dir()
        last, _ = newest_checkpoint(out)
        info.update(status="preempted", signal=name, stopped_at_step=step, checkpoint=str(last) if last else None)
        if main:
            _write_json(out / RUN_FILE, info)
        where = f"checkpoint saved to {ckpt}" if saved else f"no checkpoint saved (last complete: {last or 'none'})"
        say(f"[run] stopped by {name} at step {step}: {where}; resume with: python scripts/train.py --config "
            f"{out / RECIPE_FILE} --output_dir {out} --resume_from_checkpoint true", flush=True)
        return info

    final_eval = None
    if eval_ds is not None:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        if evals and evals[-1]["step"] == step:
            final_eval = evals[-1]  # the last periodic evaluation already ran at the final step
        else:
            final_eval = trainer.evaluate()
    bad = nonfinite_parameters(trainer.model)
    if any_rank(bool(bad), args.device):
        info.update(status="stopped", reason=f"non-finite weights at the end: {', '.join(bad) or 'on another process'}",
                    stopped_at_step=step)
        if main:
            _write_json(out / RUN_FILE, info)
        say(f"[run] stopped: the final model has non-finite weights ({', '.join(bad)}); it was not saved", flush=True)
        return info
    # The final model is written beside output_dir's files and moved in once complete.
    staged = out / STAGING / "final"
    if main:
        prepare_staging(out, "final")
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staged))
    if main:
        tokenizer.save_pretrained(str(staged))
        publish_files(staged, out)
        try:
            (out / STAGING).rmdir()
        except OSError:
            pass
    trainer.save_state()
    info.update({"status": "finished", "global_step": step, "final_depth": current_depth(trainer.model),
                 "final_params": count_params(trainer.model), "train_loss": train_result.training_loss,
                 "final_eval_loss": final_eval["eval_loss"] if final_eval else None,
                 "train_runtime_s": train_result.metrics.get("train_runtime")})
    if main:
        _write_json(out / RUN_FILE, info)
    loss = f"{info['final_eval_loss']:.4f}" if final_eval else "n/a"
    say(f"[run] done: step {info['global_step']}, depth {info['final_depth']}, final eval_loss {loss}; "
        f"model and tokenizer saved to {out}", flush=True)
    return info


EXIT_CODES = {"finished": 0, "stopped": 3}


def main(argv: list[str] | None = None) -> int:
    """0: finished; 2: refused before anything was written (one line on stderr); 3: stopped on
    non-finite numbers; 128 + signal number: stopped by SIGTERM / SIGINT after saving a checkpoint."""
    main_rank = os.environ.get("RANK", "0") == "0"  # set by launchers; TrainingArguments does not exist yet
    logging.basicConfig(format="[%(name)s] %(message)s", level=logging.INFO if main_rank else logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.WARNING)
    try:
        recipe, options = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        info = run(recipe, options)
    except StartError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the training loop (which saves and stops instead)
        print("error: interrupted before training started; output_dir was not changed", file=sys.stderr, flush=True)
        return 130
    if info.get("status") == "preempted":
        import signal

        return 128 + signal.Signals[info["signal"]].value
    return EXIT_CODES.get(info.get("status"), 1)
