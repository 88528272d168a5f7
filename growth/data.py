"""Training data: documents -> tokenizer -> packed blocks of `block_size` tokens, at any corpus size.

Sources (`DataConfig.source`):
- "stdlib": the running Python's standard library .py files, the embedded default corpus. It
  exists on every machine and needs no download; see `stdlib_documents` for what is left out.
- a local file, directory or glob of .txt / .jsonl / .json / .parquet files. A .txt file is split
  into documents at blank lines; .jsonl has one JSON object per line, its `text_field` the document;
  .parquet one row per document (FineWeb-Edu's layout: many shards with a `text` column).
- "hf:<name>": a dataset on the HF hub (`hub_config`, `train_split`, `validation_split`), read
  with `datasets` in streaming mode, shard by shard: it is never downloaded whole.

Every source is cut into *pieces* (`plan_pieces`): a byte range of a .txt/.jsonl file (cut at a
document boundary), a range of row groups of a parquet file, one shard of a hub dataset, a slice
of the stdlib list. A piece is the unit of parallel work and of rank sharding; within a piece,
documents are read in order, tokenized in chunks of at most `CHUNK_DOCS` documents / `CHUNK_BYTES`
bytes, each document followed by eos, and each chunk's token stream is cut into blocks (the tail
shorter than a block is dropped, HF run_clm's `group_texts` per batch). So memory never holds more
than one chunk per worker, whatever the corpus size, and the blocks of a piece depend only on that
piece: the result does not depend on how many processes made it.

Two paths, the same blocks:
- prepared (default): `build_datasets` tokenizes every piece in `num_proc` processes into flat token
  files (uint16, or uint32 for vocabularies above 65536) plus a `manifest.json` (dtype, tokenizer
  fingerprint, block and token counts), once per (corpus, tokenizer, block size, caps). Training
  reads them memory-mapped (`PackedBlocks`): nothing is loaded whole.
- streaming (`streaming: true`): `StreamingBlocks`, an IterableDataset that reads, tokenizes and
  packs in the dataloader's workers. Rank r's worker w of W reads pieces r*W+w, r*W+w + R*W, ...
  (disjoint across all ranks and workers); with fewer pieces than readers, every reader reads all
  pieces and keeps one document in R*W. `max_train_tokens` is a cap, not a preload: each reader
  stops at its share of it and starts its share over (next epoch). Validation is a small prepared
  slice: the first `max_eval_tokens` of held-out documents.

Validation is held out deterministically: a document goes to validation when the sha1 of its id
(relative path for the stdlib, the text itself for files and the hub) falls in the first
`validation_fraction` of the hash range; the same on every machine, rank and worker count.

Exact resume. Prepared: the Trainer's seeded sampler skips consumed batches by index (no data is
read). Streaming: the position of every reader is a function of the resumed optimizer step (the
stream is endless and each rank's dataloader takes batches from its workers round robin), so
`StreamingBlocks.make_dataloader` tells each reader how many blocks it had given; the reader then
re-tokenizes its share up to that point without yielding it (exact; costs tokenization only, spread
over all ranks and workers) and, where the Trainer will itself skip those batches, first yields that
many empty placeholder blocks for it to discard (no tokenization, no transfer of real data).

Cache (under `cache_dir`): `tokenizer-<key>/` for a trained BPE, `blocks-<key>/` for packed data.
Each entry is written into a hidden temp dir and renamed into place when complete, so a killed
preparation never leaves an entry that looks complete: the next run rebuilds it (and removes the
dead run's temp dir). An entry whose manifest or files do not match is rebuilt too. Entries of hub
datasets are keyed by name only (the remote may change): delete the cache dir to refresh.
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import socket
import sys
import sysconfig
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .memory import trim_heap

logger = logging.getLogger(__name__)

# Bump when the cached layout or the packing changes, so old cache entries are not reused.
CACHE_FORMAT = 2
# Cap on stdlib training text when max_train_bytes is None: enough for the tiny recipe, quick to
# tokenize (what stdlib_documents gives is ~10.7 MB on Python 3.11).
STDLIB_MAX_BYTES = 4_000_000
HUB_PREFIX = "hf:"
EOS_TOKEN = "<|endoftext|>"  # trained BPE: eos and bos (GPT-2 style)
PAD_TOKEN = "<|pad|>"
_KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# Directories of the stdlib that are test suites or not part of the stdlib proper.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
# A piece is about this much of a file: enough pieces for many processes / readers, few enough
# that the per-piece overhead (a process task, a file in the cache) does not matter.
PIECE_BYTES = 32 * 2**20
# Tokenize and pack this many documents (or bytes) at once: bounds memory per worker.
CHUNK_DOCS = 1000
CHUNK_BYTES = 4 * 2**20
ERROR_PREFIX = "data"  # every input error here starts with "data" or "tokenizer" (run.py prints them as one line)


@dataclass
class DataConfig:
    source: str = "stdlib"  # "stdlib", a local file/dir/glob, or "hf:<hub dataset name>"
    hub_config: str | None = None  # hub dataset config name
    text_field: str = "text"  # column holding the text (jsonl/json/parquet/hub)
    train_split: str = "train"  # hub split to train on
    validation_split: str | None = None  # hub split for validation; None: hold out validation_fraction
    validation_fraction: float = 0.05  # held out by hash of the document id
    streaming: bool = False  # read, tokenize and pack on the fly in the dataloader (no preparation); needs max_eval_tokens
    max_train_bytes: int | None = None  # cap on training text; None: STDLIB_MAX_BYTES for stdlib, else all
    block_size: int = 128  # tokens per packed block
    max_train_tokens: int | None = None  # cap on training tokens (packed); streaming: where the stream starts over
    max_eval_tokens: int | None = None  # cap on validation tokens (packed)
    num_proc: int | None = None  # processes that prepare the data; None: the cores this process may use
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
        for name in ("max_train_bytes", "max_train_tokens", "max_eval_tokens", "num_proc"):
            if getattr(self, name) is not None:
                _check_positive(f"data.{name}", getattr(self, name))
        for name in ("max_train_tokens", "max_eval_tokens"):
            value = getattr(self, name)
            if value is not None and value < self.block_size:
                raise ValueError(f"data.{name} must be at least data.block_size={self.block_size}, got {value}")
        if self.streaming:
            if self.source == "stdlib":
                raise ValueError("data.streaming is for hub and local file sources, got source 'stdlib'")
            if self.max_train_bytes is not None:
                raise ValueError("data.max_train_bytes is not used when data.streaming is true "
                                 f"(got {self.max_train_bytes}); cap the stream with data.max_train_tokens")
            # The validation slice is prepared up front: it needs an end.
            if self.max_eval_tokens is None and (hub and self.validation_split is None or self.validation_fraction > 0):
                raise ValueError("data.max_eval_tokens must be set when data.streaming is true, got None "
                                 "(the validation slice is prepared up front)")

    @property
    def procs(self) -> int:
        return self.num_proc or len(os.sched_getaffinity(0))


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


@lru_cache(maxsize=4)
def _stdlib_split(validation_fraction: float, max_bytes: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train texts, validation texts) of the stdlib; train in sha1 order (so a byte cap samples the
    whole stdlib, not its first packages) and cut at `max_bytes`."""
    docs = stdlib_documents()
    train = sorted((p for p, _ in docs if not in_validation(p, validation_fraction)),
                   key=lambda p: hashlib.sha1(p.encode()).digest())
    text = dict(docs)
    validation = tuple(t for p, t in docs if in_validation(p, validation_fraction))
    return tuple(take_bytes((text[p] for p in train), max_bytes)), validation


def local_files(source: str) -> list[Path]:
    """The files a local source names (a file, a directory searched recursively, or a glob), sorted."""
    if glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        if not files:
            raise ValueError(f"data.source: glob {source!r} matches no files")
    elif os.path.isdir(source):
        files = sorted(p for p in Path(source).rglob("*") if p.is_file() and p.suffix in _KINDS)
        if not files:
            raise ValueError(f"data.source: directory {source!r} has no {', '.join(_KINDS)} files")
    elif os.path.isfile(source):
        files = [Path(source)]
    else:
        raise ValueError(f"data.source: file {source!r} does not exist")
    for path in files:
        if path.suffix not in _KINDS:
            raise ValueError(
                f"data.source: unsupported file type {path.suffix!r} for '{path}' (expected {', '.join(_KINDS)})"
            )
    kinds = {_KINDS[p.suffix] for p in files}
    if len(kinds) > 1:
        raise ValueError(f"data.source: {source!r} mixes file types ({', '.join(sorted(kinds))}); use one kind")
    return files


def in_validation(doc_id: str, fraction: float) -> bool:
    """Stable hold-out: the first `fraction` of sha1's range (Python's hash() is salted per process)."""
    h = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return h < fraction * 2**64


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


@dataclass(frozen=True)
class Piece:
    """A unit of reading: `kind` txt/jsonl (byte range [start, stop) of `path`), parquet (row groups
    [start, stop)), hf (shard `start` of `stop` shards of the hub dataset `path`, `split`), stdlib
    (texts [start, stop) of the stdlib's `split` list). `role`: "mixed" (held out by hash),
    "train" or "validation" (every document goes to that side)."""

    kind: str
    path: str
    start: int
    stop: int
    role: str = "mixed"
    split: str = ""

    def __str__(self):
        return f"{self.path}[{self.start}:{self.stop}]"


def plan_pieces(cfg: DataConfig, piece_bytes: int | None = None) -> list[Piece]:
    """The pieces of the corpus, in reading order. Checks what is cheap to check before any
    tokenization: files that are empty, not text, or lack the text column."""
    piece_bytes = piece_bytes or PIECE_BYTES
    if cfg.source == "stdlib":
        train, validation = _stdlib_split(cfg.validation_fraction, cfg.max_train_bytes or STDLIB_MAX_BYTES)
        step = max(1, len(train) // 8)  # a few pieces: the tiny recipe's 4 MB is quick either way
        pieces = [Piece("stdlib", "stdlib", i, min(i + step, len(train)), "train", "train") for i in range(0, len(train), step)]
        return pieces + [Piece("stdlib", "stdlib", 0, len(validation), "validation", "validation")]
    if cfg.source.startswith(HUB_PREFIX):
        name = cfg.source[len(HUB_PREFIX) :]
        pieces = _hub_pieces(cfg, name, cfg.train_split, "mixed" if cfg.validation_split is None else "train")
        if cfg.validation_split is not None:
            pieces += _hub_pieces(cfg, name, cfg.validation_split, "validation")
        return pieces
    pieces = []
    for path in local_files(cfg.source):
        kind, size = _KINDS[path.suffix], path.stat().st_size
        if size == 0:
            raise ValueError(f"data.source: '{path}' is empty")
        if kind == "parquet":
            pieces += _parquet_pieces(path, cfg, piece_bytes)
            continue
        with open(path, "rb") as f:
            _check_text_start(path, kind, f.read(1 << 16), cfg)
            cuts = [0]
            for target in range(piece_bytes, size, piece_bytes):
                cut = _boundary(f, max(target, cuts[-1]), b"\n\n" if kind == "txt" else b"\n")
                if cut >= size:
                    break
                if cut > cuts[-1]:
                    cuts.append(cut)
        cuts.append(size)
        pieces += [Piece(kind, str(path), a, b) for a, b in zip(cuts, cuts[1:])]
    return pieces


def _boundary(f, offset: int, sep: bytes) -> int:
    """The first offset >= `offset` just after `sep` (a document starts there)."""
    f.seek(max(0, offset - len(sep) + 1))
    pos, tail = f.tell(), b""
    while data := f.read(1 << 16):
        found = (tail + data).find(sep)
        if found >= 0:
            return pos - len(tail) + found + len(sep)
        tail = data[-(len(sep) - 1) :] if len(sep) > 1 else b""
        pos += len(data)
    return pos


def _check_text_start(path: Path, kind: str, head: bytes, cfg: DataConfig) -> None:
    if b"\0" in head:
        raise ValueError(f"data.source: '{path}' is not text (NUL byte at byte {head.index(bytes(1))})")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut by the 64 KB window
            raise ValueError(f"data.source: '{path}' is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if kind == "jsonl" and b"\n" in head:  # a complete first line
        line = head.split(b"\n", 1)[0]
        if line.strip():
            _json_text(line, path, 1, cfg.text_field)


def _parquet_pieces(path: Path, cfg: DataConfig, piece_bytes: int) -> list[Piece]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
    except Exception as e:  # not parquet, truncated: each a different pyarrow type
        raise ValueError(f"data.source: '{path}' is not a readable parquet file: {e}") from None
    if cfg.text_field not in names:
        raise ValueError(f"data.text_field: column {cfg.text_field!r} not in '{path}' (columns: {names})")
    pieces, start, size = [], 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= piece_bytes:
            pieces.append(Piece("parquet", str(path), start, g + 1))
            start, size = g + 1, 0
    if start < meta.num_row_groups:
        pieces.append(Piece("parquet", str(path), start, meta.num_row_groups))
    return pieces


def _hub_stream(cfg: DataConfig, name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, cfg.hub_config, split=split, streaming=True)
    except Exception as e:  # not found, offline, bad config or split: each a different type
        raise ValueError(
            f"data.source: could not load hub dataset {name!r} (hub_config={cfg.hub_config!r}, "
            f"split={split!r}): {type(e).__name__}: {e}"
        ) from None


def _hub_pieces(cfg: DataConfig, name: str, split: str, role: str) -> list[Piece]:
    ds = _hub_stream(cfg, name, split)
    if ds.column_names is not None and cfg.text_field not in ds.column_names:
        raise ValueError(f"data.text_field: column {cfg.text_field!r} not in {cfg.source!r} (columns: {ds.column_names})")
    n = ds.n_shards
    return [Piece("hf", name, i, n, role, split) for i in range(n)]


def _json_text(line: bytes, path, lineno: int | None, field: str):
    where = f"'{path}' line {lineno}" if lineno else f"'{path}'"
    try:
        row = json.loads(line.rstrip(b"\r\n"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"data.source: {where}: malformed JSON ({e})") from None
    if not isinstance(row, dict):
        raise ValueError(f"data.source: {where}: expected a JSON object, got {type(row).__name__}")
    if field not in row:
        raise ValueError(f"data.text_field: column {field!r} not in {where} (keys: {sorted(row)})")
    return row[field]


def _line_number(path, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def read_piece(piece: Piece, cfg: DataConfig) -> Iterator[tuple[str, bool]]:
    """(text, held out for validation) of each document of `piece`, in order."""
    if piece.kind == "stdlib":
        train, validation = _stdlib_split(cfg.validation_fraction, cfg.max_train_bytes or STDLIB_MAX_BYTES)
        texts = train if piece.role == "train" else validation
        yield from ((t, piece.role == "validation") for t in texts[piece.start : piece.stop])
        return
    texts = _piece_texts(piece, cfg)
    for text in texts:
        if text is None or text == "":
            continue  # a row without text
        if not isinstance(text, str):
            raise ValueError(f"data.text_field: {cfg.text_field!r} of a document in '{piece.path}' is "
                             f"{type(text).__name__}, not text")
        held_out = piece.role == "validation" or (piece.role == "mixed" and in_validation(text, cfg.validation_fraction))
        yield text, held_out


def _piece_texts(piece: Piece, cfg: DataConfig) -> Iterator:
    if piece.kind == "parquet":
        import pyarrow.parquet as pq

        f = pq.ParquetFile(piece.path)
        for g in range(piece.start, piece.stop):
            yield from f.read_row_group(g, columns=[cfg.text_field]).column(0).to_pylist()
    elif piece.kind == "hf":
        ds = _hub_stream(cfg, piece.path, piece.split).shard(num_shards=piece.stop, index=piece.start)
        for row in ds.select_columns([cfg.text_field]):
            yield row[cfg.text_field]
    elif piece.kind == "jsonl":
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            pos = piece.start
            while pos < piece.stop:
                line = f.readline()
                if not line:
                    break
                if line.strip():
                    try:
                        yield _json_text(line, piece.path, None, cfg.text_field)
                    except ValueError as e:  # name the line: counting newlines is only paid on error
                        raise ValueError(str(e).replace(f"'{piece.path}'", f"'{piece.path}' line {_line_number(piece.path, pos)}", 1)) from None
                pos += len(line)
    elif piece.kind == "txt":
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            data = f.read(piece.stop - piece.start)
        if b"\x00" in data:
            at = piece.start + data.index(b"\x00")
            raise ValueError(f"data.source: '{piece.path}' is not text (NUL byte at byte {at}, line {_line_number(piece.path, at)})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            at = piece.start + e.start
            raise ValueError(f"data.source: '{piece.path}' is not UTF-8 text (byte {at}, line "
                             f"{_line_number(piece.path, at)}: {e.reason})") from None
        for doc in text.split("\n\n"):  # blank lines separate documents
            doc = doc.strip("\n")
            if doc:
                yield doc
    else:
        raise AssertionError(piece.kind)


def load_documents(cfg: DataConfig) -> tuple[Iterable[str], Iterable[str]]:
    """Training and validation texts in reading order; each can be iterated more than once."""
    pieces = plan_pieces(cfg)

    def texts(validation: bool, max_bytes: int | None) -> Iterator[str]:
        out = (t for p in pieces for t, v in read_piece(p, cfg) if v == validation)
        return take_bytes(out, max_bytes) if max_bytes is not None else out

    return _Reiterable(texts, False, cfg.max_train_bytes), _Reiterable(texts, True, None)


class _Reiterable:
    """An iterable that calls `fn(*args)` afresh on each iteration (a generator is single-use)."""

    def __init__(self, fn: Callable[..., Iterator[str]], *args):
        self.fn, self.args = fn, args

    def __iter__(self) -> Iterator[str]:
        return self.fn(*self.args)


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
            ) from None
        if tok.eos_token is None:
            raise ValueError(f"tokenizer.name_or_path: {tcfg.name_or_path!r} has no eos token to separate documents")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token  # blocks are packed, so pad only matters to collators/generation
        return tok
    if train_texts is None:
        raise ValueError("build_tokenizer: tokenizer.train_bpe is true but no train_texts were given")
    texts = list(take_bytes(train_texts, tcfg.train_bytes))
    if not texts:
        raise ValueError("data: no training text to train the BPE on (tokenizer.train_bpe)")
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


def _eos(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token to separate documents")
    return eos


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: the same ids, without BatchEncoding's overhead
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]


def token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= 2**16 else np.dtype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Tokenize and pack


def tokenize_documents(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int | None = None, batch_docs: int = 256
) -> np.ndarray:
    """The token stream of `texts`: each document's ids (no special tokens) followed by eos, (N,) int32."""
    eos, parts, total = _eos(tokenizer), [], 0
    texts = iter(texts)
    while batch := list(islice(texts, batch_docs)):
        part = np.fromiter(chain.from_iterable(seq + [eos] for seq in _encode(tokenizer, batch)), dtype=np.int32)
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


def _chunks(docs: Iterator[tuple[str, bool]]) -> Iterator[list[tuple[str, bool]]]:
    chunk, size = [], 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc[0])
        if len(chunk) >= CHUNK_DOCS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def pack_chunk(texts: list[str], tokenizer, block_size: int, dtype=np.int64) -> tuple[np.ndarray, int]:
    """(blocks (n, block_size), tokens before packing) of one chunk of documents (group_texts style)."""
    if not texts:
        return np.zeros((0, block_size), dtype=dtype), 0
    eos = _eos(tokenizer)
    ids = _encode(tokenizer, texts)
    lengths = np.fromiter((len(s) + 1 for s in ids), dtype=np.int64, count=len(ids))
    stream = np.empty(int(lengths.sum()), dtype=dtype)
    ends = np.cumsum(lengths)
    stream[ends - 1] = eos
    for seq, end, n in zip(ids, ends, lengths):
        stream[end - n : end - 1] = seq
    return pack(stream, block_size), len(stream)


class _SplitCounts:
    __slots__ = ("documents", "bytes", "tokens", "blocks")

    def __init__(self):
        self.documents = self.bytes = self.tokens = self.blocks = 0


def _prepare_piece(job) -> dict:
    """Tokenize and pack one piece into `<out>/{train,validation}-<index>.bin`; returns its counts."""
    index, piece, cfg, out, max_train_bytes, only = job
    tokenizer, dtype = _WORKER["tokenizer"], _WORKER["dtype"]
    counts = {"train": _SplitCounts(), "validation": _SplitCounts()}
    files = {split: open(Path(out) / f"{split}-{index:05d}.bin", "wb") for split in counts}
    left = max_train_bytes
    try:
        docs = read_piece(piece, cfg)
        if left is not None:
            docs = _cap_train_bytes(docs, left)
        for chunk in _chunks(docs):
            for split, held_out in (("train", False), ("validation", True)):
                if only is not None and split != only:
                    continue
                texts = [t for t, v in chunk if v == held_out]
                blocks, tokens = pack_chunk(texts, tokenizer, cfg.block_size, dtype)
                files[split].write(blocks.tobytes())
                c = counts[split]
                c.documents += len(texts)
                c.bytes += sum(len(t.encode("utf-8")) for t in texts)
                c.tokens += tokens
                c.blocks += len(blocks)
    finally:
        for f in files.values():
            f.close()
        # A worker lives for every piece: without this its RSS grew with the text it had tokenized
        # (freed buffers kept by glibc; 327 -> 664 MB over 400 MB of text, back to ~310 MB with it).
        trim_heap()
    return {split: {k: getattr(c, k) for k in c.__slots__} for split, c in counts.items()}


def _cap_train_bytes(docs, max_bytes: int):
    left = max_bytes
    for text, held_out in docs:
        if not held_out:
            if left <= 0:
                return
            data = text.encode("utf-8")
            if len(data) > left:
                text = data[:left].decode("utf-8", errors="ignore")
            left -= len(data)
        yield text, held_out


_WORKER: dict = {}


def _init_worker(tokenizer, dtype) -> None:
    _WORKER["tokenizer"], _WORKER["dtype"] = tokenizer, dtype


def _run_jobs(jobs: list, num_proc: int, on_result: Callable[[int, dict], bool]) -> None:
    """Run `_prepare_piece` over `jobs` on `num_proc` processes; results in job order to `on_result`,
    which returns False to stop (a cap is reached). A window of 2 * num_proc jobs is in flight."""
    if num_proc <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            if not on_result(i, _prepare_piece(job)):
                return
        return
    # fork: workers inherit the tokenizer and the imported modules (a spawn start costs seconds each).
    # concurrent.futures, not multiprocessing.Pool: Pool.terminate() with busy workers hung for
    # minutes inside a multi-threaded process (seen in the test suite: its worker-handler thread
    # did not exit); the executor cancels the queued pieces and lets the running ones finish (at a
    # cap, an error or Ctrl-C), and a worker that dies raises BrokenProcessPool instead of hanging.
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(min(num_proc, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(_WORKER["tokenizer"], _WORKER["dtype"]))
    try:
        pending = {}
        submitted = 0
        for i in range(len(jobs)):
            while submitted < len(jobs) and submitted < i + 2 * num_proc:
                pending[submitted] = pool.submit(_prepare_piece, jobs[submitted])
                submitted += 1
            if not on_result(i, pending.pop(i).result()):
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Prepared datasets (memory-mapped token files)


class PackedBlocks(torch.utils.data.Dataset):
    """Blocks of a prepared split: row i -> {"input_ids", "labels"} (the same int64 ids; HF causal
    LMs shift labels inside the loss), read from memory-mapped token files."""

    def __init__(self, path: str | Path, split: str, manifest: dict):
        self.path, self.split = Path(path), split
        self.block_size, self.dtype = manifest["block_size"], np.dtype(manifest["dtype"])
        self.files = [(p["index"], p[split]["used_blocks"]) for p in manifest["pieces"] if p[split]["used_blocks"]]
        self.offsets = np.cumsum([0] + [n for _, n in self.files]).tolist()
        self._maps = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getstate__(self):  # dataloader workers open their own maps (a pickled memmap is a copy)
        return {**self.__dict__, "_maps": None}

    def _map(self, k: int) -> np.ndarray:
        if self._maps is None:
            self._maps = {}
        if k not in self._maps:
            index, n = self.files[k]
            self._maps[k] = np.memmap(self.path / f"{self.split}-{index:05d}.bin", dtype=self.dtype, mode="r",
                                      shape=(n, self.block_size))
        return self._maps[k]

    def block(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"block {i} out of range for {len(self)} blocks")
        k = bisect.bisect_right(self.offsets, i) - 1
        return self._map(k)[i - self.offsets[k]]

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(self.block(int(i)).astype(np.int64))
        return {"input_ids": ids, "labels": ids}


def dataset_cache_path(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split_only: str | None = None) -> Path:
    """Where `build_datasets` keeps the blocks for this corpus, tokenizer, block size and caps."""
    skip = {"cache_dir", "num_proc", "streaming"}  # they do not change the blocks
    config = {k: v for k, v in asdict(cfg).items() if k not in skip}
    key = _digest({"format": CACHE_FORMAT, "config": config, "corpus": _corpus_fingerprint(cfg),
                   "tokenizer": _tokenizer_fingerprint(tokenizer), "only": split_only})
    return Path(cfg.cache_dir) / f"{'eval' if split_only else 'blocks'}-{key}"


def build_datasets(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, progress: bool = False):
    """(train, validation) datasets. Prepared: two `PackedBlocks`, built once into the cache and
    memory-mapped. Streaming: a `StreamingBlocks` and a prepared validation slice.

    Under several processes, call it on the main process first (`main_process_first`): the other
    ranks then only load. Concurrent builds are safe (atomic rename) but wasteful."""
    _eos(tokenizer)
    if cfg.streaming:
        pieces = plan_pieces(cfg)
        train_pieces = [p for p in pieces if p.role != "validation"]
        if not train_pieces:
            raise ValueError(f"data.source: {cfg.source!r} has no training documents")
        held_out = cfg.validation_split is not None or cfg.validation_fraction > 0
        validation = _prepared(cfg, tokenizer, pieces, "validation", progress) if held_out else None
        return StreamingBlocks(cfg, tokenizer, train_pieces), validation
    return _prepared(cfg, tokenizer, None, None, progress)


def _prepared(cfg, tokenizer, pieces, split_only, progress):
    path = dataset_cache_path(cfg, tokenizer, split_only)
    manifest = _load_manifest(path, cfg, tokenizer)
    if manifest is None:
        pieces = pieces if pieces is not None else plan_pieces(cfg)
        _remove_dead_temps(path)
        tmp = _temp_dir(path)
        try:
            _write_pieces(cfg, tokenizer, pieces, tmp, split_only, progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, path)
        manifest = _load_manifest(path, cfg, tokenizer)
        assert manifest is not None, f"{path} was just written but does not load"
    else:
        logger.info("loading packed data from %s", path)
    splits = [split_only] if split_only else ["train", "validation"]
    out = tuple(PackedBlocks(path, s, manifest) for s in splits)
    return out[0] if split_only else out


def _write_pieces(cfg: DataConfig, tokenizer, pieces: list[Piece], out: Path, split_only: str | None, progress: bool):
    """Tokenize and pack `pieces` into `out`, then write `out/manifest.json`."""
    dtype = token_dtype(tokenizer)
    caps = {"train": cfg.max_train_tokens, "validation": cfg.max_eval_tokens}
    need = {s: (c // cfg.block_size if c else None) for s, c in caps.items()}
    splits = [split_only] if split_only else ["train", "validation"]
    if split_only == "validation":  # a streaming run's validation slice: only pieces that hold validation
        pieces = [p for p in pieces if p.role != "train"]
    jobs = [(i, p, cfg, str(out), None, split_only) for i, p in enumerate(pieces)]
    results: list[dict] = []
    have = {s: 0 for s in splits}
    train_bytes = 0
    bar = _progress_bar(pieces, progress)
    start = time.time()
    _WORKER.update(tokenizer=tokenizer, dtype=dtype)

    def on_result(i: int, result: dict) -> bool:
        nonlocal train_bytes
        if cfg.max_train_bytes is not None and "train" in splits and cfg.source != "stdlib":
            left = cfg.max_train_bytes - train_bytes
            if result["train"]["bytes"] > left:  # this piece crosses the byte cap: redo it cut (as one reader would)
                result = _prepare_piece((i, pieces[i], cfg, str(out), left, split_only))
            train_bytes += result["train"]["bytes"]
        results.append({"index": i, "piece": str(pieces[i]), **result})
        for s in splits:
            have[s] += result[s]["blocks"]
        if bar is not None:
            tokens = sum(r[s]["tokens"] for r in results for s in splits)
            bar.update(_piece_size(pieces[i]))
            bar.set_postfix_str(f"{tokens / 1e6:.1f}M tokens, {tokens / max(time.time() - start, 1e-9) / 1e6:.2f}M tokens/s")
        done_bytes = cfg.max_train_bytes is not None and cfg.source != "stdlib" and train_bytes >= cfg.max_train_bytes
        return not all(need[s] is not None and have[s] >= need[s] or (s == "train" and done_bytes) for s in splits)

    try:
        _run_jobs(jobs, cfg.procs, on_result)
    finally:
        if bar is not None:
            bar.close()
    for f in out.glob("*.bin"):  # pieces past the caps that were started (and stopped)
        if int(f.stem.rsplit("-", 1)[1]) >= len(results):
            f.unlink()
    for s in splits:  # the caps cut the packed stream at a block; pieces past them are not read
        left = need[s] if need[s] is not None else float("inf")
        for r in results:
            r[s]["used_blocks"] = int(min(r[s]["blocks"], left))
            left -= r[s]["used_blocks"]
    for r in results:
        for s in ("train", "validation"):
            if s not in splits:
                r[s] = {"used_blocks": 0, "blocks": 0, "tokens": 0, "documents": 0, "bytes": 0}
    totals = {s: {k: sum(r[s][k] for r in results) for k in ("documents", "bytes", "tokens", "blocks", "used_blocks")}
              for s in ("train", "validation")}
    held_out = cfg.validation_split is not None or cfg.validation_fraction > 0
    for s in splits:
        if totals[s]["used_blocks"] == 0 and (s == "train" or held_out):
            docs = totals[s]["documents"]
            raise ValueError(
                f"data: the {s} split of {cfg.source!r} gives fewer tokens than one block "
                f"(data.block_size={cfg.block_size}; {docs} documents, {totals[s]['tokens']} tokens); "
                "use more text or a smaller block_size"
            )
    manifest = {"format": CACHE_FORMAT, "dtype": dtype.name, "block_size": cfg.block_size,
                "tokenizer": _tokenizer_fingerprint(tokenizer), "tokenizer_name": tokenizer.name_or_path,
                "config": asdict(cfg), "totals": totals, "seconds": round(time.time() - start, 2), "pieces": results}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    logger.info("data: prepared %s in %.1f s: %s", out.name, time.time() - start, json.dumps(totals))


def _piece_size(p: Piece) -> int:
    return p.stop - p.start if p.kind in ("txt", "jsonl") else 1


def _progress_bar(pieces: list[Piece], enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    by_bytes = all(p.kind in ("txt", "jsonl") for p in pieces)
    total = sum(_piece_size(p) for p in pieces)
    return tqdm(total=total, unit="B" if by_bytes else "piece", unit_scale=by_bytes, desc="preparing", smoothing=0.1)


def _load_manifest(path: Path, cfg: DataConfig, tokenizer) -> dict | None:
    """The entry's manifest if it is complete and matches; None (after moving it aside) if not."""
    if not path.exists():
        return None
    problem = None
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        manifest, problem = None, f"no readable manifest ({type(e).__name__})"
    if manifest is not None:
        if (manifest.get("format"), manifest.get("block_size")) != (CACHE_FORMAT, cfg.block_size):
            problem = f"format/block size {manifest.get('format')}/{manifest.get('block_size')}"
        elif manifest.get("tokenizer") != _tokenizer_fingerprint(tokenizer):
            problem = f"written with another tokenizer ({manifest.get('tokenizer_name')!r})"
        else:
            item = np.dtype(manifest["dtype"]).itemsize
            for p in manifest["pieces"]:
                for s in ("train", "validation"):
                    f = path / f"{s}-{p['index']:05d}.bin"
                    if p[s]["blocks"] and (not f.exists() or f.stat().st_size != p[s]["blocks"] * cfg.block_size * item):
                        problem = f"{f.name} is missing or has the wrong size"
    if problem is None:
        return manifest
    logger.warning("data: cache entry %s is not usable (%s); rebuilding it", path, problem)
    aside = path.parent / f".{path.name}.bad-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError:
        pass  # another rank moved it first
    return None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _remove_dead_temps(path: Path) -> None:
    """Temp dirs of this entry left by a killed preparation on this machine (its pid is gone).

    A pid means something only on the host that wrote it: on a cache shared by several nodes
    (each node's main process prepares), another node's build in progress is never touched."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        m = re.match(rf"\.{re.escape(path.name)}\.tmp-(.+)-(\d+)-[0-9a-f]{{8}}$", tmp.name)
        if m and m.group(1) == _host() and not _alive(int(m.group(2))):
            logger.warning("data: removing %s, left by a preparation that did not finish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# Streaming


def _reader_batches(batches: int, workers: int, worker: int) -> int:
    """Batches worker `worker` of `workers` gave out of a rank's first `batches` (torch's
    DataLoader takes them from its workers round robin)."""
    return max(0, (batches - worker + workers - 1) // workers)


class StreamingBlocks(torch.utils.data.IterableDataset):
    """Training blocks read, tokenized and packed on the fly; see the module docstring.

    Used as is (world 1 unless `make_dataloader` said otherwise) it is one stream read by the
    dataloader's workers; `make_dataloader` (called by growth's Trainer) makes each rank read its
    own disjoint share and positions every reader at a resumed step."""

    def __init__(self, cfg: DataConfig, tokenizer, pieces: list[Piece]):
        self.cfg, self.tokenizer, self.pieces = cfg, tokenizer, pieces
        self.rank, self.world = 0, 1
        self.batch_size, self.skip_batches, self.placeholders = 1, 0, False
        self.epoch = 0

    def make_dataloader(self, args, accelerator, collate_fn, resume_step: int = 0):
        """This rank's dataloader: reads only this rank's share (not dispatched from rank 0, not
        read whole by every rank as accelerate would do with an IterableDataset)."""
        from accelerate.data_loader import prepare_data_loader

        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.batch_size = args.per_device_train_batch_size
        self.skip_batches = resume_step * args.gradient_accumulation_steps
        self.placeholders = not args.ignore_data_skip  # the Trainer skips that many batches itself
        workers = args.dataloader_num_workers
        loader = torch.utils.data.DataLoader(
            self, batch_size=self.batch_size, collate_fn=collate_fn, num_workers=workers, drop_last=True,
            pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None)
        # num_processes=1: accelerate only moves batches to the device and tracks the end of data.
        return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0,
                                   put_on_device=True, dispatch_batches=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _blocks(self, reader: int, readers: int) -> Iterator[np.ndarray]:
        """This reader's blocks, one pass over its share, up to its share of max_train_tokens."""
        cfg, dtype = self.cfg, np.int64
        if len(self.pieces) >= readers:
            mine, keep = self.pieces[reader::readers], None
        else:  # fewer pieces than readers: all read everything, each keeps one document in `readers`
            mine, keep = self.pieces, (reader, readers)
        cap = cfg.max_train_tokens // cfg.block_size // readers if cfg.max_train_tokens else None
        given, seen = 0, 0

        def docs(piece):
            nonlocal seen
            for doc in read_piece(piece, cfg):
                if keep is None or seen % readers == reader:
                    yield doc
                seen += 1

        # Chunks of a piece's documents as in preparation: one reader gives exactly the prepared blocks.
        for piece in mine:
            for chunk in _chunks(docs(piece)):
                blocks, _ = pack_chunk([t for t, v in chunk if not v], self.tokenizer, cfg.block_size, dtype)
                for b in blocks:
                    if cap is not None and given >= cap:
                        return
                    given += 1
                    yield b

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if not self.placeholders:
            # A new loader takes its first batch from worker 0, the uninterrupted one would take the
            # next batch from worker skip_batches % workers: worker w carries on that reader's stream.
            worker = (worker + self.skip_batches) % workers
        reader, readers = self.rank * workers + worker, self.world * workers
        skip = _reader_batches(self.skip_batches, workers, worker) * self.batch_size
        if self.placeholders and skip:
            empty = torch.zeros(self.cfg.block_size, dtype=torch.int64)
            for _ in range(skip):
                yield {"input_ids": empty, "labels": empty}
        epoch = 0
        while True:  # endless: the Trainer stops at max_steps; each pass over the share is an epoch
            n = 0
            for b in self._blocks(reader, readers):
                n += 1
                if skip:
                    skip -= 1
                    continue
                ids = torch.from_numpy(b)
                yield {"input_ids": ids, "labels": ids}
            if n == 0:
                raise ValueError(f"data: reader {reader} of {readers} (rank {self.rank}, worker {worker}) got no "
                                 f"training block from {self.cfg.source!r}; use more text, fewer "
                                 "dataloader_num_workers or a smaller block_size")
            epoch += 1


def data_summary(train, validation) -> str:
    """One line for the run log."""
    if isinstance(train, StreamingBlocks):
        cap = f", capped at {train.cfg.max_train_tokens:,} tokens" if train.cfg.max_train_tokens else ""
        head = f"streaming {len(train.pieces)} pieces of {train.cfg.source}{cap}"
    else:
        head = f"{len(train)} train"
    return f"{head} / {len(validation) if validation is not None else 0} eval blocks"


# ---------------------------------------------------------------------------------------------
# Cache keys and entries


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
    tmp = final.parent / f".{final.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
