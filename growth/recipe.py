"""Recipes: one typed, validated description of a training run, read from YAML.

A recipe has the sections of the run it describes::

    name: tiny                  # default: the file's stem
    label: stack_last           # groups seeds of one schedule in reports; default: name
    seed: 0
    baseline: false             # true: train the final depth from step 0, no growth
    tags: []
    model:     {family: llama, hidden_size: 128, num_layers: 2, ...}       # growth.models.ModelConfig
    data:      {source: stdlib, block_size: 128, ...}                      # growth.data.DataConfig
    tokenizer: {train_bpe: true, vocab_size: 4096}                         # growth.data.TokenizerConfig
    growth:    {schedule: {...}, operator: stack_last, init: copy, ...}    # growth.config.GrowthConfig
    training:  {max_steps: 600, learning_rate: 1.0e-3, ...}               # any transformers.TrainingArguments field

``base: tiny.yaml`` (a path relative to the recipe's own file) makes a recipe a delta of another:
sections merge field by field, and a field's value, even a mapping such as ``growth.schedule``,
replaces the base's whole. ``name`` and ``label`` are never inherited: a derived recipe is
another run. Bases may have bases.

Everything is checked in ``load_recipe``, before any data or model work: unknown keys (with the
known ones listed), types, each section's own rules (its ``__post_init__``), and the rules
between sections (schedule against model depth and max_steps, block size against positions,
baseline depth). Errors are ``ValueError("recipe <file>: <field>: <problem>")``. Nothing here
touches the network: hub datasets and tokenizers are only named.

Overrides (``load_recipe(path, ["--max_steps", "50", "--growth.init", "zero"])`` or a dict)
address any field by its dotted path; a bare name that is a TrainingArguments field means
``training.<name>``. Values are read as YAML (``1e-3`` is a float here, unlike YAML 1.1).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import GrowthConfig
from .data import DataConfig, TokenizerConfig
from .families import SUPPORTED as SUPPORTED_FAMILIES
from .models import ModelConfig
from .operators import make_mapping
from .safety import SafetyConfig

TOP_LEVEL = ("name", "label", "seed", "baseline", "tags", "lr_decay_share", "model", "data", "tokenizer", "growth", "safety", "training")
WSD = "warmup_stable_decay"
SECTIONS = {"model": ModelConfig, "data": DataConfig, "tokenizer": TokenizerConfig, "growth": GrowthConfig,
            "safety": SafetyConfig}
NOT_INHERITED = ("name", "label")
# TrainingArguments fields a recipe does not set in `training`: the recipe's own field, or an option
# of a single invocation (it would otherwise be saved into recipe.yaml and replayed).
TRAINING_RESERVED = {
    "seed": "set the recipe's top-level seed instead",
    "resume_from_checkpoint": "pass --resume_from_checkpoint to the training script (it is not part of a recipe)",
    "local_rank": "set by the launcher",
}


@dataclass
class Recipe:
    name: str = field(metadata={"help": "run name; default: the recipe file's stem"})
    label: str | None = field(default=None, metadata={"help": "schedule label that groups seeds in reports; default: name"})
    seed: int = field(default=0, metadata={"help": "seed for model initialisation and training (TrainingArguments.seed)"})
    baseline: bool = field(default=False, metadata={"help": "train the final depth from step 0 without growth"})
    tags: list = field(default_factory=list, metadata={"help": "free-form tags, written to run.json"})
    lr_decay_share: float | None = field(default=None, metadata={
        "help": "training.lr_scheduler_type warmup_stable_decay: share of max_steps in the final decay phase, "
                "in (0, 1); becomes lr_scheduler_kwargs.num_decay_steps (round(share * max_steps))"})
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(train_bpe=True))
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    training: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.label is None:
            self.label = self.name
        self.training.setdefault("output_dir", f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-ready); ``recipe_from_dict(r.to_dict()) == r``."""
        return {
            "name": self.name, "label": self.label, "seed": self.seed, "baseline": self.baseline, "tags": list(self.tags),
            **({"lr_decay_share": self.lr_decay_share} if self.lr_decay_share is not None else {}),
            "model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
            "tokenizer": dataclasses.asdict(self.tokenizer), "growth": self.growth.to_dict(),
            "safety": dataclasses.asdict(self.safety),
            "training": dict(self.training),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def training_arguments_kwargs(self) -> dict[str, Any]:
        """``training`` as TrainingArguments takes it: ``lr_decay_share`` turned into WSD's step count."""
        kwargs = dict(self.training)
        if self.lr_decay_share is not None:
            decay = wsd_decay_steps(self.lr_decay_share, kwargs["max_steps"])
            kwargs["lr_scheduler_kwargs"] = {**(kwargs.get("lr_scheduler_kwargs") or {}), "num_decay_steps": decay}
        return kwargs

    @property
    def final_depth(self) -> int:
        s = self.growth.schedule
        return s.final_depth if s is not None else self.model.num_layers


def wsd_decay_steps(share: float, max_steps: int) -> int:
    """Steps of the warmup-stable-decay schedule's final decay phase: round(share * max_steps), at least 1."""
    return max(1, round(share * max_steps))


def warmup_steps_of(training: dict, max_steps: int) -> int:
    """TrainingArguments' warmup: a float below 1 is a fraction of max_steps (rounded up, as transformers does)."""
    w = training.get("warmup_steps", 0) or 0
    return math.ceil(w * max_steps) if isinstance(w, float) and w < 1 else int(w)


# ---------------------------------------------------------------------------------------------
# YAML


class _Loader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader, node, deep=False):
    """YAML keeps the last of two equal keys; in a recipe that silently drops a whole block."""
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


# YAML 1.1 reads 1e-3 as a string (its floats need a dot); recipes mean a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The recipe at ``path`` with its bases merged in (depth first)."""
    if path in chain:
        raise ValueError(f"recipe {chain[0].name}: base: cycle {' -> '.join(p.name for p in (*chain, path))}")
    if not path.is_file():
        where = f"recipe {chain[-1].name}: base" if chain else "recipe"
        raise ValueError(f"{where}: file {str(path)!r} does not exist")
    try:
        d = parse_yaml(path.read_text())
    except yaml.YAMLError as e:  # one line: where, and what
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ValueError(f"recipe {path.name}: {where}not valid YAML: {what}") from None
    except UnicodeDecodeError:
        raise ValueError(f"recipe {path.name}: not a text file") from None
    if d is None:
        raise ValueError(f"recipe {path.name}: the file is empty (a recipe sets at least one field, or a base)")
    if not isinstance(d, dict):
        raise ValueError(f"recipe {path.name}: expected a mapping at the top, got {type(d).__name__}")
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise ValueError(f"recipe {path.name}: base: expected a file name, got {base!r}")
    parent = _read((path.parent / base).resolve(), (*chain, path))
    for key in NOT_INHERITED:
        parent.pop(key, None)
    return merge(parent, d)


def merge(base: dict, delta: dict) -> dict:
    """Sections merge field by field; any other value (a field's mapping too) replaces the base's."""
    out = dict(base)
    for key, value in delta.items():
        if key in (*SECTIONS, "training") and isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Fields, types and help


def training_fields() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    if section == "training":
        return {k: f for k, f in training_fields().items() if k not in TRAINING_RESERVED}
    cls = SECTIONS[section]
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def type_hints(section: str | None) -> dict[str, Any]:
    if section == "training":  # TrainingArguments' annotations are evaluated already
        return {k: f.type for k, f in training_fields().items()}
    return typing.get_type_hints(Recipe if section is None else SECTIONS[section])


def hint_for(path: str):
    """Type of the field at a dotted path (``model.hidden_size``), or None if it names no field."""
    head, _, rest = path.partition(".")
    if head in SECTIONS or head == "training":
        if not rest or "." in rest:
            return None
        return type_hints(head).get(rest)
    return type_hints(None).get(head) if not rest and head in TOP_LEVEL else None


def field_help(cls, f: dataclasses.Field) -> str:
    """A field's ``help`` metadata, else its trailing ``# comment`` in the class source."""
    if f.metadata.get("help"):
        return f.metadata["help"]
    return _source_comments(cls).get(f.name, "")


_COMMENTS: dict[type, dict[str, str]] = {}


def _source_comments(cls) -> dict[str, str]:
    if cls not in _COMMENTS:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = ""
        pattern = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", re.M)
        _COMMENTS[cls] = {name: text.strip() for name, text in pattern.findall(source)}
    return _COMMENTS[cls]


def _type_name(hint) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _args(hint) -> tuple:
    return typing.get_args(hint) if _is_union(hint) else (hint,)


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def admits_str(hint) -> bool:
    return any(a is str or a is Any or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in _args(hint))


def check_type(name: str, value, hint) -> None:
    """Raise ValueError naming ``name`` unless ``value`` (plain YAML data) fits ``hint``."""
    if not _fits(value, hint):
        raise ValueError(f"{name}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    enums = [a for a in _args(hint) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and isinstance(value, str) and not any(value in {m.value for m in e} for e in enums):
        choices = [m.value for e in enums for m in e]
        raise ValueError(f"{name}: unknown value {value!r}; choose one of {', '.join(map(str, choices))}{_did_you_mean(value, choices)}")


def _fits(value, hint) -> bool:
    if hint is Any or hint is None:
        return True
    if _is_union(hint):
        return any(_fits(value, a) for a in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return any(value is a or (value == a and type(value) is type(a)) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = typing.get_args(hint)
        return not inner or origin is tuple or all(_fits(v, inner[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return isinstance(value, (str, hint))
        if dataclasses.is_dataclass(hint):  # e.g. GrowthSchedule: built from a mapping
            return isinstance(value, (dict, hint))
        return isinstance(value, hint)
    return True  # a hint we cannot check (forward references): the class's own checks decide


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(prefix: str, d: dict, known) -> None:
    for key in d:
        if key not in known:
            listed = ", ".join(known) if len(known) <= 30 else "any transformers.TrainingArguments field"
            raise ValueError(f"{prefix}{key}: unknown key{_did_you_mean(str(key), known)}; known keys: {listed}")


# ---------------------------------------------------------------------------------------------
# Overrides


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["--a.b", "1", "--c=x", "d.e=2", "--flag"]`` -> ``{"a.b": 1, "c": "x", "d.e": 2, "flag": True}``."""
    out, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        key = token[2:] if token.startswith("--") else token
        if "=" in key:
            key, raw = key.split("=", 1)
        elif not token.startswith("--"):
            raise ValueError(f"override {token!r}: expected --key value, --key=value or key=value")
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            raw, i = tokens[i + 1], i + 1
        else:
            raw = "true"  # a bare flag
        out[key] = parse_value(key, raw)
        i += 1
    return out


def parse_value(path: str, raw: str):
    """A command-line value as YAML, kept as the raw string where the field wants a string."""
    try:
        value = parse_yaml(raw)
    except yaml.YAMLError:
        return raw
    hint = hint_for(qualify(path))
    if hint is not None and not isinstance(value, str) and admits_str(hint) and not _fits(value, hint):
        return raw
    return value


def qualify(path: str) -> str:
    """A bare TrainingArguments field name means ``training.<name>``."""
    head = path.split(".", 1)[0]
    if head not in TOP_LEVEL and head in training_fields():
        return f"training.{path}"
    return path


def apply_overrides(d: dict, overrides: dict[str, Any]) -> dict:
    """Set each dotted path in (a copy of) ``d``; nested mappings are created as needed."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    for path, value in overrides.items():
        if isinstance(value, dict) and "." not in path and path in (*SECTIONS, "training"):
            d[path] = {**(d.get(path) or {}), **value}
            continue
        keys = qualify(path).split(".")
        node = d
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            else:
                node[k] = dict(node[k])
            node = node[k]
        node[keys[-1]] = value
    return d


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_recipe(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """Read, merge bases, apply overrides, validate; ValueError("recipe <file>: ...") on any problem."""
    path = Path(path)
    d = _read(path.resolve())
    try:
        if isinstance(overrides, (list, tuple)):
            overrides = parse_overrides(list(overrides))
        d = apply_overrides(d, overrides or {})
    except ValueError as e:
        raise ValueError(f"recipe {path.name}: {e}") from None
    d.setdefault("name", path.stem)
    return recipe_from_dict(d, source=path.name)


def recipe_from_dict(d: dict, source: str = "<dict>") -> Recipe:
    try:
        return _build(d)
    except ValueError as e:
        raise ValueError(f"recipe {source}: {e}") from None


def _build(d: dict) -> Recipe:
    if not isinstance(d, dict):
        raise ValueError(f"expected a mapping, got {d!r}")
    if "base" in d:
        raise ValueError("base: only load_recipe resolves bases (it needs the recipe's file)")
    for key in d:
        if key not in TOP_LEVEL:  # a bare TrainingArguments name belongs under training
            close = difflib.get_close_matches(str(key), TOP_LEVEL, n=1) or [
                f"training.{m}" for m in difflib.get_close_matches(str(key), list(training_fields()), n=1)]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{key}: unknown key{hint}; known keys: {', '.join(TOP_LEVEL)}")
    if "name" not in d:
        raise ValueError("name: missing")
    top = type_hints(None)
    for key in ("name", "label", "seed", "baseline", "tags", "lr_decay_share"):
        if key in d:
            check_type(key, d[key], top[key])
    for i, tag in enumerate(d.get("tags") or []):
        check_type(f"tags[{i}]", tag, str)
    if "seed" in d and not 0 <= d["seed"] < 2**32:  # numpy's range; set_seed fails late otherwise
        raise ValueError(f"seed: must be in [0, 2**32), got {d['seed']}")
    if not d["name"].strip():
        raise ValueError(f"name: must be a non-empty string, got {d['name']!r}")

    sections = {}
    for section, cls in SECTIONS.items():
        sections[section] = _build_section(section, cls, d.get(section, {}))
    training = d.get("training") or {}
    _check_training(training)
    recipe = Recipe(name=d["name"], label=d.get("label"), seed=d.get("seed", 0), baseline=d.get("baseline", False),
                    tags=list(d.get("tags") or []), lr_decay_share=d.get("lr_decay_share"), training=dict(training),
                    **sections)
    _check_lr_schedule(recipe)
    _check_across(recipe)
    return recipe


def _build_section(section: str, cls, values):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{section}: expected a mapping, got {values!r}")
    fields = section_fields(section)
    _check_keys(f"{section}.", values, list(fields))
    hints = type_hints(section)
    for key, value in values.items():
        check_type(f"{section}.{key}", value, hints[key])
    if section == "model" and values.get("family") is not None and values["family"] not in SUPPORTED_FAMILIES.split(", "):
        family = values["family"]
        raise ValueError(f"model.family: unsupported family {family!r}; supported: {SUPPORTED_FAMILIES}"
                         f"{_did_you_mean(family, SUPPORTED_FAMILIES.split(', '))}")
    if section == "growth" and values.get("beta", 1.0) != 1.0 and values.get("init", "copy") != "scaled_copy":
        raise ValueError(f"growth.beta: {values['beta']} is only used by growth.init scaled_copy, "
                         f"got init {values.get('init', 'copy')!r}")
    if section == "tokenizer" and "train_bpe" not in values:
        # Naming a tokenizer means: use it; naming none means: train one (the tiny default).
        values = {**values, "train_bpe": values.get("name_or_path") is None}
    try:
        return cls(**values)
    except ValueError as e:
        msg = str(e)
        if not msg.startswith((f"{section}.", f"{section}:")):
            msg = f"{section}: {msg}"
        raise ValueError(msg) from None


def _check_training(training) -> None:
    if not isinstance(training, dict):
        raise ValueError(f"training: expected a mapping of TrainingArguments fields, got {training!r}")
    fields = training_fields()
    hints = type_hints("training")
    for key, value in training.items():
        if key in TRAINING_RESERVED:
            raise ValueError(f"training.{key}: not set in a recipe; {TRAINING_RESERVED[key]}")
        if key not in fields:
            raise ValueError(f"training.{key}: unknown key{_did_you_mean(str(key), fields)}; "
                             "known keys: the fields of transformers.TrainingArguments (see scripts/train.py --help)")
        check_type(f"training.{key}", value, hints[key])
    max_steps = training.get("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        raise ValueError(f"training.max_steps: must be positive (or -1 to train num_train_epochs), got {max_steps}")
    _check_training_numbers(training)


# TrainingArguments accepts these out of range and fails (or trains wrongly) only once data and model exist.
_POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
             "num_train_epochs", "logging_steps", "save_steps", "eval_steps", "adam_epsilon")
_NON_NEGATIVE = ("learning_rate", "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm",
                 "dataloader_num_workers", "eval_accumulation_steps", "label_smoothing_factor")
_UNIT = ("adam_beta1", "adam_beta2")  # in [0, 1)


def _check_training_numbers(training: dict) -> None:
    for key, value in training.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"training.{key}: must be a finite number, got {value}")
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _POSITIVE and value <= 0:
            raise ValueError(f"training.{key}: must be positive, got {value}")
        if key in _NON_NEGATIVE and value < 0:
            raise ValueError(f"training.{key}: must be >= 0, got {value}")
        if key in _UNIT and not 0 <= value < 1:
            raise ValueError(f"training.{key}: must be in [0, 1), got {value}")
        if key == "data_seed" and not 0 <= value < 2**32:
            raise ValueError(f"training.data_seed: must be in [0, 2**32), got {value}")


def _check_lr_schedule(r: Recipe) -> None:
    """warmup_stable_decay needs its decay length, given once; lr_decay_share only means something there."""
    t, share = r.training, r.lr_decay_share
    wsd = t.get("lr_scheduler_type") == WSD
    kwargs = t.get("lr_scheduler_kwargs")
    given = kwargs.get("num_decay_steps") if isinstance(kwargs, dict) else None
    if share is None:
        if wsd and given is None:
            raise ValueError(f"lr_decay_share: training.lr_scheduler_type {WSD} needs the decay phase's length: set "
                             "lr_decay_share (e.g. 0.2) or training.lr_scheduler_kwargs.num_decay_steps")
        return
    if not wsd:
        raise ValueError(f"lr_decay_share: {share} is only used with training.lr_scheduler_type {WSD}, "
                         f"got lr_scheduler_type {t.get('lr_scheduler_type', 'linear')!r}")
    if not 0 < share < 1:
        raise ValueError(f"lr_decay_share: must be in (0, 1) (a share of max_steps), got {share}")
    if given is not None:
        raise ValueError(f"lr_decay_share: {share} and training.lr_scheduler_kwargs.num_decay_steps {given} both set "
                         "the decay length; keep one")
    max_steps = t.get("max_steps", -1)
    if max_steps < 1:
        raise ValueError(f"lr_decay_share: needs a positive training.max_steps (the share is of max_steps), got {max_steps}")
    warmup, decay = warmup_steps_of(t, max_steps), wsd_decay_steps(share, max_steps)
    if warmup + decay > max_steps:
        raise ValueError(f"lr_decay_share: {share} gives {decay} decay steps, which with {warmup} warmup steps exceed "
                         f"training.max_steps {max_steps}")


def _check_across(r: Recipe) -> None:
    """Rules between sections."""
    m, schedule = r.model, r.growth.schedule
    family_model = m.name_or_path is None  # else the depth is in a config we do not read here
    if family_model and r.data.block_size > m.max_position_embeddings:
        raise ValueError(f"data.block_size: {r.data.block_size} is larger than model.max_position_embeddings "
                         f"{m.max_position_embeddings}")
    if r.data.streaming and r.training.get("max_steps", -1) <= 0:  # an endless stream has no epochs to count
        raise ValueError(f"data.streaming: needs a positive training.max_steps, got {r.training.get('max_steps', -1)}")
    evaluates = str(r.training.get("eval_strategy", "no")) not in ("no", "IntervalStrategy.NO")
    if evaluates and r.data.validation_fraction == 0 and r.data.validation_split is None:
        raise ValueError(f"data.validation_fraction: 0 holds out no evaluation data (and data.validation_split is "
                         f"unset), but training.eval_strategy is {r.training['eval_strategy']!r}: hold out a share "
                         "(e.g. 0.01), name a hub validation_split, or set --eval_strategy no")
    if schedule is None or not family_model:
        return
    if r.baseline:
        if m.num_layers != schedule.final_depth:
            raise ValueError(f"model.num_layers: a baseline trains the final depth of growth.schedule "
                             f"({schedule.final_depth}) from step 0, got {m.num_layers}")
        return
    if schedule.initial_depth != m.num_layers:
        raise ValueError(f"growth.schedule.initial_depth: {schedule.initial_depth} does not match "
                         f"model.num_layers {m.num_layers} (the depth training starts at)")
    depth = schedule.initial_depth
    for i, (_, target) in enumerate(schedule.points):
        try:  # the operator must be able to make each growth of the schedule
            make_mapping(r.growth.operator, depth, target, r.growth.block)
        except ValueError as e:
            raise ValueError(f"growth: {r.growth.operator} cannot grow {depth} -> {target} layers "
                             f"(growth.schedule.points[{i}]): {e}") from None
        depth = target
    max_steps = r.training.get("max_steps", -1)
    if max_steps > 0 and schedule.unit in ("steps", "fraction"):
        try:  # tokens and flops depend on the world size: the trainer converts those before step 0
            schedule.to_steps(max_steps)
        except ValueError as e:
            raise ValueError(f"growth.schedule.{e} (training.max_steps={max_steps})") from None
