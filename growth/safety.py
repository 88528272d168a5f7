"""Nothing lost: the rules that keep a run directory trustworthy.

- A start validates everything first (recipe, data, tokenizer, model, the checkpoint it resumes
  from: files complete and loadable, shapes against the recipe, weights finite, recipe unchanged)
  and writes nothing into ``output_dir`` before that: a refused start raises ``StartError`` (one
  line, no traceback) and leaves the directory as it was.
- Checkpoints are written under ``output_dir/.staging/`` and renamed into place once every file
  (of every rank) is there, so a ``checkpoint-N`` directory is always complete; ``newest_checkpoint``
  still checks each one, and names those it skips.
- SIGTERM / SIGINT (``StopRequest``) end the run with a checkpoint at the next step boundary;
  a second signal exits at once.
- ``RunGuard`` stops a run whose loss is non-finite for ``safety.nonfinite_loss_steps``
  consecutive steps, without saving the broken model.

The Trainer-facing parts (where a checkpoint is written, the per-step loss) are small hooks in
growth/trainer.py; what is here only uses files, tensors and the public callback API.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

STAGING = ".staging"  # under output_dir: checkpoints being written
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RECIPE_IN_CHECKPOINT = "recipe.yaml"


class StartError(ValueError):
    """A problem found before anything was computed or written: printed as one line."""


@dataclass
class SafetyConfig:
    nonfinite_loss_steps: int = field(default=3, metadata={
        "help": "stop the run after this many consecutive optimizer steps with a non-finite training loss "
                "(checkpoints of those steps are not saved); 0: never stop"})

    def __post_init__(self):
        n = self.nonfinite_loss_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"safety.nonfinite_loss_steps must be a non-negative integer, got {n!r}")


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def _check_zip(path: Path) -> str | None:
    """torch.save writes a zip: a truncated file has no central directory (read without the tensors)."""
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{path.name} is truncated or not a torch file ({e})"
    return None


def safetensors_header(path: Path) -> dict:
    """The header of a .safetensors file, after checking that the file holds every byte it names."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path.name}: truncated ({size} bytes)")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8:
            raise ValueError(f"{path.name}: truncated or corrupt header ({size} bytes, header claims {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path.name}: corrupt header ({e})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{path.name}: truncated ({size} bytes, its header needs {8 + n + end})")
    return header


def weight_files(ckpt: Path) -> list[Path]:
    if (ckpt / "model.safetensors").exists():
        return [ckpt / "model.safetensors"]
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        return sorted({ckpt / name for name in json.loads(index.read_text())["weight_map"].values()})
    return []


def _deepspeed_tag(ckpt: Path) -> Path | None:
    latest = ckpt / "latest"
    return ckpt / latest.read_text().strip() if latest.is_file() else None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (a missing, truncated or unreadable file), or None.

    Reads file headers only, not the tensors (``check_weights`` does that)."""
    if not ckpt.is_dir():
        return "not a directory"
    state = ckpt / "trainer_state.json"
    if not state.is_file():
        return "trainer_state.json is missing"
    try:
        step = json.loads(state.read_text())["global_step"]
        if not isinstance(step, int):
            raise ValueError(f"global_step is {step!r}")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        return f"trainer_state.json is unreadable ({type(e).__name__}: {e})"
    tag = _deepspeed_tag(ckpt)
    if tag is not None and not (tag.is_dir() and any(tag.iterdir())):
        return f"DeepSpeed tag {tag.name} named in 'latest' is missing or empty"
    files = weight_files(ckpt)
    # FSDP's sharded state dicts are directories (pytorch_model_fsdp_0/, optimizer_0/).
    fsdp = any(p.is_dir() and p.name.startswith("pytorch_model_fsdp") for p in ckpt.iterdir())
    if not files and tag is None and not fsdp and not (ckpt / "pytorch_model.bin").exists():
        return "no model weights (model.safetensors)"
    if (ckpt / "model.safetensors.index.json").exists():
        missing = [f.name for f in files if not f.exists()]
        if missing:
            return f"weight shard {missing[0]} is missing"
    for f in files:
        try:
            safetensors_header(f)
        except (ValueError, KeyError, TypeError, OSError) as e:
            return str(e)
    if tag is None and not fsdp and not (ckpt / "optimizer.pt").exists():
        return "optimizer.pt is missing"
    torch_files = [p for p in ckpt.iterdir() if p.suffix in (".pt", ".pth", ".bin")]
    torch_files += [p for p in tag.iterdir() if p.suffix == ".pt"] if tag is not None else []
    for p in sorted(torch_files):
        problem = _check_zip(p)
        if problem:
            return problem
    for p in sorted(ckpt.glob("*.json")):
        try:
            json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            return f"{p.name} is unreadable ({type(e).__name__})"
    return None


def checkpoint_step(ckpt: Path) -> int:
    return json.loads((ckpt / "trainer_state.json").read_text())["global_step"]


def newest_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete ``checkpoint-N`` in ``output_dir``, and a line for each one skipped."""
    out = Path(output_dir)
    if not out.is_dir():
        return None, []
    found = sorted(((int(m.group(1)), p) for p in out.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()),
                   reverse=True)
    skipped = []
    staging = out / STAGING
    if staging.is_dir():
        skipped += [f"{STAGING}/{p.name} (a save that was interrupted)" for p in sorted(staging.iterdir())]
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name} ({problem})")
    return None, skipped


def resolve_checkpoint(value: str | bool, output_dir: str | Path) -> tuple[Path, str]:
    """The checkpoint to resume from (``True``: the newest complete one in output_dir), and a line saying which."""
    if value is True:
        ckpt, skipped = newest_checkpoint(output_dir)
        skip = f"; skipped {', '.join(skipped)}" if skipped else ""
        if ckpt is None:
            raise StartError(f"--resume_from_checkpoint true: no complete checkpoint in output_dir {str(output_dir)!r}"
                             f"{skip or ' (it has no checkpoint-* directory)'}")
        return ckpt, f"resuming from {ckpt} (the newest complete checkpoint){skip}"
    ckpt = Path(value)
    if not ckpt.exists():
        close = [p.name for p in ckpt.parent.glob("checkpoint-*")] if ckpt.parent.is_dir() else []
        hint = f" (found there: {', '.join(sorted(close))})" if close else ""
        raise StartError(f"--resume_from_checkpoint: {str(ckpt)!r} does not exist{hint}")
    if ckpt.is_dir() and any(CHECKPOINT_RE.match(p.name) for p in ckpt.iterdir()):
        raise StartError(f"--resume_from_checkpoint: {str(ckpt)!r} is a run directory, not a checkpoint; "
                         "pass one of its checkpoint-N directories, or true with --output_dir set to it")
    problem = checkpoint_problem(ckpt)
    if problem:
        raise StartError(f"--resume_from_checkpoint: {str(ckpt)!r} is not a complete checkpoint: {problem}")
    return ckpt, f"resuming from {ckpt}"


_LAYER_INDEX = re.compile(r"^(?P<head>.*?\.)(?P<i>\d+)(?P<tail>\..*)$")


def check_weights(ckpt: Path, model, depth: int, layers_path: str) -> None:
    """The checkpoint's weights fit ``model`` grown to ``depth`` layers, and are all finite.

    ``layers_path`` (e.g. ``model.layers``) is where the blocks live: block ``i``'s tensors are
    compared with block 0's. Raises StartError naming the file and the tensor."""
    import torch
    from safetensors import safe_open

    config = ckpt / "config.json"
    if config.exists():
        saved = json.loads(config.read_text())
        layers = saved.get("num_hidden_layers", saved.get("n_layer"))
        if layers is not None and layers != depth:
            raise StartError(f"{ckpt.name}/config.json: {layers} layers, but the recipe's schedule is at depth {depth} "
                             f"at step {checkpoint_step(ckpt)}")
        for key in ("model_type", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "n_embd", "n_head", "n_inner"):
            mine = getattr(model.config, key, None)
            if key in saved and mine is not None and saved[key] != mine:
                raise StartError(f"{ckpt.name}/config.json: {key} is {saved[key]!r}, the recipe's model has {mine!r}")
    files = weight_files(ckpt)
    if not files:
        return  # engine-only checkpoint (ZeRO-3): the loaded model is checked on the first step instead
    shapes = {}
    for name, p in model.named_parameters():
        shapes[name] = tuple(getattr(p, "ds_shape", p.shape))
    prefix = layers_path + "."
    seen = set()
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                lookup = key
                if key.startswith(prefix):
                    m = _LAYER_INDEX.match(key[len(layers_path):])
                    if m is None or int(m.group("i")) >= depth:
                        raise StartError(f"{ckpt.name}/{f.name}: tensor {key} is beyond the expected depth {depth}")
                    lookup = f"{prefix}0{m.group('tail')}"
                expected = shapes.get(lookup)
                if expected is None:
                    raise StartError(f"{ckpt.name}/{f.name}: tensor {key} is not in the recipe's model")
                shape = tuple(st.get_slice(key).get_shape())
                if shape != expected:
                    raise StartError(f"{ckpt.name}/{f.name}: tensor {key} has shape {list(shape)}, the recipe's model "
                                     f"needs {list(expected)}")
                t = st.get_tensor(key)
                if t.is_floating_point() and not torch.isfinite(t).all():
                    bad = int((~torch.isfinite(t)).sum())
                    raise StartError(f"{ckpt.name}/{f.name}: tensor {key} has {bad} non-finite value(s); "
                                     "resume from an earlier checkpoint")
                seen.add(lookup if not key.startswith(prefix) else key)
    # Every parameter (of every block up to depth) must be there; tied parameters once under any name.
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    for names in groups.values():
        wanted = []
        for name in names:
            if name.startswith(prefix):
                m = _LAYER_INDEX.match(name[len(layers_path):])
                wanted += [f"{prefix}{i}{m.group('tail')}" for i in range(depth)] if m and m.group("i") == "0" else []
            else:
                wanted.append(name)
        if not wanted:
            continue
        if any(n.startswith(prefix) for n in wanted):
            missing = [n for n in wanted if n not in seen]
            if missing:
                raise StartError(f"{ckpt.name}: tensor {missing[0]} is missing from the weights")
        elif not any(n in seen for n in wanted):
            raise StartError(f"{ckpt.name}: tensor {wanted[0]} is missing from the weights")


def nonfinite_parameters(model, limit: int = 3) -> list[str]:
    """Names of parameters (this process's shards under ZeRO-3) holding a NaN or inf."""
    import torch

    bad = []
    for name, p in model.named_parameters():
        t = getattr(p, "ds_tensor", p)
        if t.numel() and t.is_floating_point() and not torch.isfinite(t.detach()).all():
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def any_rank(flag: bool | float, device=None) -> float:
    """The max of ``flag`` over all processes (itself without a process group)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return float(flag)
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


# ---------------------------------------------------------------------------------------------
# Writing checkpoints and files


def prepare_staging(run_dir: str | Path, name: str) -> Path:
    """An empty ``run_dir/.staging/name`` (a leftover of an interrupted save is removed)."""
    path = Path(run_dir) / STAGING / name
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def publish_checkpoint(staged: str | Path, final: str | Path, extra_files: dict[str, str] | None = None) -> None:
    """Move a completely written checkpoint into place (replacing one of the same name)."""
    staged, final = Path(staged), Path(final)
    for name, text in (extra_files or {}).items():
        (staged / name).write_text(text)
    _fsync_tree(staged)
    old = None
    if final.exists():
        old = staged.parent / f"replaced-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old)
    try:
        staged.parent.rmdir()  # .staging, when nothing else is being written
    except OSError:
        pass


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file so that a reader (or a crash) sees the old content or the new, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_files(staged: str | Path, out: str | Path) -> list[str]:
    """Move every file of a fully written directory into ``out`` (each by an atomic rename)."""
    staged, out = Path(staged), Path(out)
    _fsync_tree(staged)
    names = sorted(p.name for p in staged.iterdir())
    for name in names:
        target = out / name
        if target.is_dir() and not (staged / name).is_dir():
            shutil.rmtree(target)
        if (staged / name).is_dir() and target.exists():
            shutil.rmtree(target)
        os.replace(staged / name, target)
    shutil.rmtree(staged, ignore_errors=True)
    return names


# ---------------------------------------------------------------------------------------------
# Recipe changes on resume

# Fields that shape neither the model, nor the data, nor the schedule: they may change on resume.
FREE_FIELDS = ("name", "label", "tags", "data.cache_dir", "safety.")
FREE_TRAINING = (
    "output_dir", "logging_", "save_", "eval_", "per_device_eval_batch_size", "report_to", "run_name",
    "disable_tqdm", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "push_to_hub", "hub_", "log_level", "log_on_each_node", "skip_memory_metrics",
    "include_", "ddp_timeout", "ddp_find_unused_parameters", "torch_compile", "gradient_checkpointing",
    "project", "trackio_", "metric_for_best_model", "greater_is_better", "load_best_model_at_end",
    "prediction_loss_only", "use_cpu", "torch_empty_cache_steps", "batch_eval_metrics", "restore_callback_states_from_checkpoint",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _is_free(path: str) -> bool:
    if path.startswith("training."):
        return path[len("training."):].startswith(FREE_TRAINING)
    return any(path == f or (f.endswith(".") and path.startswith(f)) for f in FREE_FIELDS)


def recipe_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old, new)}`` for every field that differs and shapes the model, data or schedule."""
    a, b = _flatten(old), _flatten(new)
    changes = {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key) and not _is_free(key):
            changes[key] = (a.get(key), b.get(key))
    return changes


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changes.items())


# ---------------------------------------------------------------------------------------------
# Signals and the per-step guard


class StopRequest:
    """SIGTERM / SIGINT: ask the run to stop at the next step boundary; a second one exits at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, say=print):
        self.signum: int | None = None
        self.say = say
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"[run] second {name}: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        self.say(f"[run] {name}: saving a checkpoint at the next step boundary, then stopping "
                 f"({name} again exits at once, without saving)")

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False


class RunGuard(TrainerCallback):
    """Ends each optimizer step by agreeing, across processes, on two questions: was a stop
    requested (a signal), and was this step's loss non-finite. Must run after the callbacks that
    grow the model and decide on saving (add it last), so a stop saves the grown model.

    A non-finite step is never saved; ``nonfinite_loss_steps`` of them in a row end the run."""

    def __init__(self, trainer, stop: StopRequest, nonfinite_loss_steps: int):
        self.trainer = trainer
        self.stop = stop
        self.limit = nonfinite_loss_steps
        self.bad_steps = 0
        self.first_bad_step: int | None = None
        self.stopped_by: str | None = None  # "signal" | "nonfinite"
        self.signum: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        import torch
        import torch.distributed as dist

        bad = self.trainer.take_nonfinite_loss()
        flags = torch.tensor([float(self.stop.signum or 0), float(bad)], device=args.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signum, bad = (int(v) for v in flags.tolist())
        if bad:
            control.should_save = False  # never a checkpoint of a step that went non-finite
            self.bad_steps += 1
            self.first_bad_step = self.first_bad_step or state.global_step
            if self.limit and self.bad_steps >= self.limit:
                self.stopped_by = "nonfinite"
                control.should_training_stop = True
                control.should_evaluate = False
                return
        else:
            self.bad_steps, self.first_bad_step = 0, None
        if signum:
            self.stopped_by, self.signum = "signal", signum
            control.should_save = not bad
            control.should_training_stop = True


class StartRecords(TrainerCallback):
    """First callback of ``on_train_begin``: the Trainer has now loaded everything it resumes from.
    Checks the loaded weights are finite (every process), then lets the run write its records."""

    def __init__(self, trainer, write):
        self.trainer = trainer
        self.write = write
        self.started = False

    def on_train_begin(self, args, state, control, **kwargs):
        bad = nonfinite_parameters(self.trainer.model)
        if any_rank(bool(bad), args.device):
            where = f": {', '.join(bad)}" if bad else " (on another process)"
            raise StartError(f"the model has non-finite weights after loading{where}; nothing was trained or written")
        if args.should_save:
            self.write()
        self.started = True


def finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
