"""Training data: documents -> tokenizer -> packed blocks of `block_size` tokens.

Sources (`DataConfig.source`):
- "stdlib": the running Python's standard library .py files, the embedded default corpus. It
  exists on every machine and needs no download; see `stdlib_documents` for what is left out.
- a local file, directory or glob of .txt / .jsonl / .json / .parquet files, read with
  `datasets.load_dataset`. A .txt file is split into documents at blank lines; for one document
  per file, or documents that contain blank lines, use .jsonl or .parquet with one row per document.
- "hf:<name>": any dataset on the HF hub (`hub_config`, `train_split`, `validation_split`).
With `streaming` (hub or local files) rows are read lazily and reading stops at
`max_train_tokens` / `max_eval_tokens`, so a large corpus is never downloaded or converted whole.

Validation is held out deterministically: a document goes to validation when the sha1 of its id
(relative path for the stdlib, row index for tables) falls in the first `validation_fraction` of
the hash range, so every call and every machine gets the same split.

Documents are tokenized without special tokens, each followed by eos, concatenated and cut into
blocks; the tail shorter than a block is dropped. Rows have `input_ids` and `labels` (equal: HF
causal LMs shift labels inside the loss), stored as int32; the torch format and
`default_data_collator` both turn them into int64, which the loss needs.

Cache (under `cache_dir`): `tokenizer-<key>/` for a trained BPE, `blocks-<key>/{train,validation,
meta.json}` for packed data. Each entry is written to a hidden temp dir and renamed into place, so
ranks that build at the same time never see a half-written entry: the first rename wins and the
others drop their copy. The trainer script still builds on the main process first
(`TrainingArguments.main_process_first`) so the other ranks only load. Entries are never
invalidated for hub datasets (the remote may change): delete the cache dir to refresh.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import uuid
from dataclasses import asdict, dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import datasets
import numpy as np
import pyarrow as pa
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

# Bump when the cached layout or the packing changes, so old cache entries are not reused.
CACHE_FORMAT = 1
# Cap on stdlib training text when max_train_bytes is None: enough for the tiny recipe, quick to
# tokenize (what stdlib_documents gives is ~10.7 MB on Python 3.11).
STDLIB_MAX_BYTES = 4_000_000
HUB_PREFIX = "hf:"
EOS_TOKEN = "<|endoftext|>"  # trained BPE: eos and bos (GPT-2 style)
PAD_TOKEN = "<|pad|>"
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Directories of the stdlib that are test suites or not part of the stdlib proper.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass
class DataConfig:
    source: str = "stdlib"  # "stdlib", a local file/dir/glob, or "hf:<hub dataset name>"
    hub_config: str | None = None  # hub dataset config name
    text_field: str = "text"  # column holding the text (jsonl/json/parquet/hub)
    train_split: str = "train"  # hub split to train on
    validation_split: str | None = None  # hub split for validation; None: hold out validation_fraction
    validation_fraction: float = 0.05  # held out by hash of the document id
    streaming: bool = False  # hub or local files: read lazily (large corpora); needs max_train/eval_tokens
    max_train_bytes: int | None = None  # cap on training text; None: STDLIB_MAX_BYTES for stdlib, else all
    block_size: int = 128  # tokens per packed block
    max_train_tokens: int | None = None  # cap on training tokens before packing
    max_eval_tokens: int | None = None  # cap on validation tokens before packing
    cache_dir: str = ".cache/data"

    def __post_init__(self):
        _check_str("data.source", self.source)
        hub = self.source.startswith(HUB_PREFIX)
        if hub:
            if not self.source[len(HUB_PREFIX) :].strip():
                raise ValueError(f"data.source: hub dataset name is empty in {self.source!r}")
        elif self.source != "stdlib":
            local_files(self.source)  # raises naming data.source
        for name in ("hub_config", "validation_split"):
            value = getattr(self, name)
            if value is not None:
                _check_str(f"data.{name}", value)
                if not hub:
                    raise ValueError(
                        f"data.{name} is only for hub sources ('hf:<name>'), got {value!r} with source {self.source!r}"
                    )
        _check_str("data.text_field", self.text_field)
        _check_str("data.train_split", self.train_split)
        _check_str("data.cache_dir", self.cache_dir)
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"data.validation_fraction must be in [0, 1), got {f!r}")
        if not isinstance(self.streaming, bool):
            raise ValueError(f"data.streaming must be true or false, got {self.streaming!r}")
        _check_positive("data.block_size", self.block_size)
        for name in ("max_train_bytes", "max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) is not None:
                _check_positive(f"data.{name}", getattr(self, name))
        for name in ("max_train_tokens", "max_eval_tokens"):
            value = getattr(self, name)
            if value is not None and value < self.block_size:
                raise ValueError(f"data.{name} must be at least data.block_size={self.block_size}, got {value}")
        if self.streaming:
            if self.source == "stdlib":
                raise ValueError("data.streaming is for hub and local file sources, got source 'stdlib'")
            # A stream has no end we want to reach: the caps say where to stop reading.
            for name in ("max_train_tokens", "max_eval_tokens"):
                if getattr(self, name) is None:
                    raise ValueError(f"data.{name} must be set when data.streaming is true, got None")


@dataclass
class TokenizerConfig:
    name_or_path: str | None = None  # any HF tokenizer (hub name or local path), loaded with AutoTokenizer
    train_bpe: bool = False  # train a byte-level BPE on the training text (the tiny default)
    vocab_size: int = 4096  # trained BPE only
    train_bytes: int = 50_000_000  # trained BPE only: learn merges from at most this much training text

    def __post_init__(self):
        if not isinstance(self.train_bpe, bool):
            raise ValueError(f"tokenizer.train_bpe must be true or false, got {self.train_bpe!r}")
        if (self.name_or_path is not None) == self.train_bpe:
            raise ValueError(
                "tokenizer: set exactly one of name_or_path or train_bpe, got "
                f"name_or_path={self.name_or_path!r} and train_bpe={self.train_bpe}"
            )
        if self.name_or_path is not None:
            _check_str("tokenizer.name_or_path", self.name_or_path)
        _check_positive("tokenizer.vocab_size", self.vocab_size)
        smallest = 256 + 2  # byte alphabet + eos + pad
        if self.vocab_size < smallest:
            raise ValueError(
                f"tokenizer.vocab_size must be at least {smallest} (256 bytes + 2 special tokens), "
                f"got {self.vocab_size}"
            )
        _check_positive("tokenizer.train_bytes", self.train_bytes)


def _check_str(name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Documents


def stdlib_documents() -> list[tuple[str, str]]:
    """(relative posix path, text) of the running Python's stdlib .py files, sorted by path.

    Left out: test suites (directories test/, tests/, idle_test/: large, full of deliberately odd
    code and data), installed packages, `encodings/` (mostly generated codec tables, a quarter of
    the bytes), `_sysconfigdata*` (build-specific) and files that are not valid UTF-8.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [
            d for d in dirnames if d not in _STDLIB_SKIP_DIRS and not (rel_dir == Path(".") and d == "encodings")
        ]
        for name in filenames:
            if not name.endswith(".py") or name.startswith("_sysconfigdata"):
                continue
            try:
                text = (Path(dirpath) / name).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            docs.append(((rel_dir / name).as_posix(), text))
    docs.sort()
    return docs


def local_files(source: str) -> list[Path]:
    """The files a local source names (a file, a directory searched recursively, or a glob), sorted."""
    if glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        if not files:
            raise ValueError(f"data.source: glob {source!r} matches no files")
    elif os.path.isdir(source):
        files = sorted(p for p in Path(source).rglob("*") if p.is_file() and p.suffix in _BUILDERS)
        if not files:
            raise ValueError(f"data.source: directory {source!r} has no {', '.join(_BUILDERS)} files")
    elif os.path.isfile(source):
        files = [Path(source)]
    else:
        raise ValueError(f"data.source: file {source!r} does not exist")
    for path in files:
        if path.suffix not in _BUILDERS:
            raise ValueError(
                f"data.source: unsupported file type {path.suffix!r} for '{path}' (expected {', '.join(_BUILDERS)})"
            )
    builders = {_BUILDERS[p.suffix] for p in files}
    if len(builders) > 1:
        raise ValueError(f"data.source: {source!r} mixes file types ({', '.join(sorted(builders))}); use one kind")
    return files


def in_validation(doc_id: str, fraction: float) -> bool:
    """Stable hold-out: the first `fraction` of sha1's range (Python's hash() is salted per process)."""
    h = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8")).digest()[:8], "big")
    return h < fraction * 2**64


def load_documents(cfg: DataConfig) -> tuple[Iterable[str], Iterable[str]]:
    """Training and validation texts. Both can be iterated more than once (tokenizer, then packing)."""
    max_bytes = cfg.max_train_bytes
    if cfg.source == "stdlib":
        docs = stdlib_documents()
        # Train in sha1 order, so the byte cap samples the whole stdlib, not its first packages.
        train = sorted(
            (p for p, _ in docs if not in_validation(p, cfg.validation_fraction)),
            key=lambda p: hashlib.sha1(p.encode()).digest(),
        )
        text = dict(docs)
        validation = [t for p, t in docs if in_validation(p, cfg.validation_fraction)]
        return list(take_bytes((text[p] for p in train), max_bytes or STDLIB_MAX_BYTES)), validation
    if cfg.source.startswith(HUB_PREFIX):
        train_ds = _load_hub(cfg, cfg.train_split)
        if cfg.validation_split is not None:
            val_ds = _load_hub(cfg, cfg.validation_split)
            _check_column(train_ds, cfg)
            _check_column(val_ds, cfg)
            return (
                _Reiterable(_column_texts, train_ds, cfg, None, max_bytes),
                _Reiterable(_column_texts, val_ds, cfg, None, None),
            )
    else:
        files = local_files(cfg.source)
        builder = _BUILDERS[files[0].suffix]
        # Blank lines separate the documents of a .txt file (see the module docstring).
        kwargs = {"sample_by": "paragraph", "keep_linebreaks": True} if builder == "text" else {}
        try:
            train_ds = datasets.load_dataset(
                builder,
                data_files=[str(p.resolve()) for p in files],
                split="train",
                streaming=cfg.streaming,
                cache_dir=os.path.join(cfg.cache_dir, "hf_datasets"),
                **kwargs,
            )
        except Exception as e:  # malformed json, unreadable parquet, bad encoding: each a different type
            raise ValueError(f"data.source: could not read {cfg.source!r} as {builder}: {type(e).__name__}: {e}") from e
    _check_column(train_ds, cfg)
    return (
        _Reiterable(_column_texts, train_ds, cfg, False, max_bytes),
        _Reiterable(_column_texts, train_ds, cfg, True, None),
    )


def _load_hub(cfg: DataConfig, split: str) -> datasets.Dataset | datasets.IterableDataset:
    name = cfg.source[len(HUB_PREFIX) :]
    try:
        return datasets.load_dataset(name, cfg.hub_config, split=split, streaming=cfg.streaming)
    except Exception as e:  # not found, offline, bad config or split: each a different type
        raise ValueError(
            f"data.source: could not load hub dataset {name!r} (hub_config={cfg.hub_config!r}, "
            f"split={split!r}, streaming={cfg.streaming}): {type(e).__name__}: {e}"
        ) from e


class _Reiterable:
    """An iterable that calls `fn(*args)` afresh on each iteration (a generator is single-use)."""

    def __init__(self, fn: Callable[..., Iterator[str]], *args):
        self.fn, self.args = fn, args

    def __iter__(self) -> Iterator[str]:
        return self.fn(*self.args)


def _check_column(ds, cfg: DataConfig) -> None:
    if ds.column_names is not None and cfg.text_field not in ds.column_names:  # None: unknown until streamed
        raise ValueError(
            f"data.text_field: column {cfg.text_field!r} not in {cfg.source!r} (columns: {ds.column_names})"
        )


def _column_texts(ds, cfg: DataConfig, validation: bool | None, max_bytes: int | None) -> Iterator[str]:
    """Texts of `cfg.text_field`; with `validation` set, only that side of the hold-out by row index."""

    def texts():
        index = 0
        for batch in ds.select_columns([cfg.text_field]).iter(batch_size=1000):
            for text in batch[cfg.text_field]:
                keep = validation is None or in_validation(str(index), cfg.validation_fraction) == validation
                if keep and text is not None:  # None: a row without text
                    yield text
                index += 1

    return take_bytes(texts(), max_bytes) if max_bytes is not None else texts()


def take_bytes(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Texts until `max_bytes` UTF-8 bytes; the last one is cut to fit."""
    left = max_bytes
    for text in texts:
        if left <= 0:
            return
        data = text.encode("utf-8")
        if len(data) > left:
            text = data[:left].decode("utf-8", errors="ignore")  # don't end inside a character
        left -= len(data)
        yield text


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(
    tcfg: TokenizerConfig, train_texts: Iterable[str] | None = None, cache_dir: str = ".cache/data"
) -> PreTrainedTokenizerBase:
    """Load `tcfg.name_or_path`, or train (or reload) a byte-level BPE on `train_texts`.

    A trained BPE has eos = bos = "<|endoftext|>" and pad = "<|pad|>", and is cached under
    `cache_dir/tokenizer-<sha1 of (text, vocab_size)>`; with the same text it is reloaded.
    """
    if tcfg.name_or_path is not None:
        try:
            tok = AutoTokenizer.from_pretrained(tcfg.name_or_path)
        except Exception as e:  # missing, offline, not a tokenizer: each a different type
            raise ValueError(
                f"tokenizer.name_or_path: could not load {tcfg.name_or_path!r}: {type(e).__name__}: {e}"
            ) from e
        if tok.eos_token is None:
            raise ValueError(f"tokenizer.name_or_path: {tcfg.name_or_path!r} has no eos token to separate documents")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token  # blocks are packed, so pad only matters to collators/generation
        return tok
    if train_texts is None:
        raise ValueError("build_tokenizer: tokenizer.train_bpe is true but no train_texts were given")
    texts = list(take_bytes(train_texts, tcfg.train_bytes))
    if not texts:
        raise ValueError("build_tokenizer: no training text to train the BPE on")
    key = _digest({"format": CACHE_FORMAT, "vocab_size": tcfg.vocab_size, "text": _texts_digest(texts)})
    path = Path(cache_dir) / f"tokenizer-{key}"
    if not path.exists():
        tok = train_bpe(texts, tcfg.vocab_size)
        tmp = _temp_dir(path)
        tok.save_pretrained(tmp)
        _publish(tmp, path)
        logger.info("trained a %d-token BPE on %d documents, saved to %s", len(tok), len(texts), path)
    return PreTrainedTokenizerFast.from_pretrained(path)


def train_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE (no unknown tokens, decode(encode(x)) == x)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,  # keep decode exact (code has spaces before punctuation)
    )


# ---------------------------------------------------------------------------------------------
# Tokenize, pack, cache


def tokenize_documents(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int | None = None, batch_docs: int = 256
) -> np.ndarray:
    """The token stream: each document's ids (no special tokens) followed by eos, (N,) int32.

    With `max_tokens`, stops reading texts once that many tokens are in hand (a stream may be endless).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token to separate documents")
    parts, total = [], 0
    texts = iter(texts)
    while batch := list(islice(texts, batch_docs)):
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        part = np.fromiter(chain.from_iterable(seq + [eos] for seq in ids), dtype=np.int32)
        parts.append(part)
        total += len(part)
        if max_tokens is not None and total >= max_tokens:
            break
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return stream[:max_tokens] if max_tokens is not None else stream


def pack(stream: np.ndarray, block_size: int) -> np.ndarray:
    """(N,) -> (N // block_size, block_size); the tail shorter than a block is dropped."""
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)


def blocks_dataset(blocks: np.ndarray) -> datasets.Dataset:
    """Columns input_ids and labels (the same ids), one row per block."""
    n, block_size = blocks.shape
    ids = pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), type=pa.int32()), block_size)
    return datasets.Dataset(pa.table({"input_ids": ids, "labels": ids}))


def dataset_cache_path(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Where `build_datasets` keeps the blocks for this config, corpus and tokenizer."""
    config = {k: v for k, v in asdict(cfg).items() if k != "cache_dir"}
    key = _digest(
        {
            "format": CACHE_FORMAT,
            "config": config,
            "corpus": _corpus_fingerprint(cfg),
            "tokenizer": _tokenizer_fingerprint(tokenizer),
        }
    )
    return Path(cfg.cache_dir) / f"blocks-{key}"


def build_datasets(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Packed (train, validation) datasets, built once and then loaded from `dataset_cache_path`.

    Under several processes, call it on the main process first (`main_process_first`); the
    cache write is atomic, so concurrent builds are safe but wasteful.
    """
    path = dataset_cache_path(cfg, tokenizer)
    if path.exists():
        logger.info("loading packed data from %s", path)
    else:
        train_texts, val_texts = load_documents(cfg)
        tmp = _temp_dir(path)
        try:
            _write_blocks(cfg, tokenizer, train_texts, val_texts, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, path)
    # Load from disk also after a build, so both paths return the same memory-mapped datasets.
    return datasets.load_from_disk(str(path / "train")), datasets.load_from_disk(str(path / "validation"))


def _write_blocks(cfg: DataConfig, tokenizer, train_texts: Iterable[str], val_texts: Iterable[str], out: Path) -> None:
    """Tokenize and pack both splits into `out/{train,validation}`, with statistics in `out/meta.json`."""
    meta = {"config": asdict(cfg), "tokenizer": tokenizer.name_or_path}
    held_out = cfg.validation_split is not None or cfg.validation_fraction > 0
    for split, texts, max_tokens, required in (
        ("train", train_texts, cfg.max_train_tokens, True),
        ("validation", val_texts, cfg.max_eval_tokens, held_out),
    ):
        counter = _Counter(texts)
        stream = tokenize_documents(counter, tokenizer, max_tokens)
        blocks = pack(stream, cfg.block_size)
        if required and len(blocks) == 0:
            raise ValueError(
                f"data: the {split} split of {cfg.source!r} gives fewer tokens than one block "
                f"(data.block_size={cfg.block_size}); use more text or a smaller block_size"
            )
        blocks_dataset(blocks).save_to_disk(str(out / split))
        meta[split] = {
            "documents": counter.documents,
            "bytes": counter.bytes,
            "tokens": len(stream),
            "blocks": len(blocks),
        }
        logger.info("data %s: %s", split, meta[split])
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


class _Counter:
    """Passes texts through, counting documents and UTF-8 bytes read (for the logged statistics)."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.documents, self.bytes = texts, 0, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.documents += 1
            self.bytes += len(text.encode("utf-8"))
            yield text


def _corpus_fingerprint(cfg: DataConfig) -> list:
    """What identifies the corpus's content cheaply: file sizes (and mtimes); hub names only."""
    if cfg.source.startswith(HUB_PREFIX):
        return [cfg.source]
    if cfg.source == "stdlib":
        root = sysconfig.get_paths()["stdlib"]
        return [sys.version, _digest([(p, len(t)) for p, t in stdlib_documents()]), root]
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in local_files(cfg.source)]


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> list:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = hashlib.sha1(backend.to_str().encode("utf-8")).hexdigest()
    else:  # tokenizers without a Rust backend: the vocabulary stands in for the whole
        content = _digest(sorted(tokenizer.get_vocab().items()))
    return [type(tokenizer).__name__, content, tokenizer.eos_token_id]


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha1()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))  # length prefix: ["ab", "c"] != ["a", "bc"]
        h.update(data)
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _temp_dir(final: Path) -> Path:
    # Beside the final path (same filesystem, so the rename is atomic); unique per process.
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; if another process got there first, keep its copy and drop ours."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # same key, so the same content
