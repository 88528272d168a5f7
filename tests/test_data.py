"""Data layer: stdlib split, BPE tokenizer, pieces, parallel preparation, memory-mapped cache,
streaming shares, bad input. Exact resume through the training script: tests/test_data_resume.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import growth.data as gd
from growth.data import (
    STDLIB_MAX_BYTES,
    DataConfig,
    PackedBlocks,
    StreamingBlocks,
    TokenizerConfig,
    _publish,
    _reader_batches,
    build_datasets,
    build_tokenizer,
    dataset_cache_path,
    in_validation,
    load_documents,
    pack,
    pack_chunk,
    plan_pieces,
    stdlib_documents,
    take_bytes,
    tokenize_documents,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = [f"def f{i}(x):\n    return x * {i} + {i * i}  # doc {i} of the fixture\n" * (1 + i % 5) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [text for _, text in stdlib_documents()[:20]]
    tcfg = TokenizerConfig(train_bpe=True, vocab_size=300)
    return build_tokenizer(tcfg, list(take_bytes(texts, 100_000)), str(tmp_path_factory.mktemp("tok")))


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))


def reference_blocks(docs, tokenizer, block_size, validation=False, fraction=0.05):
    """What preparation must give: per chunk of CHUNK_DOCS documents, the train (or held-out)
    documents' ids + eos, cut into blocks (the tail of each chunk dropped)."""
    out = []
    for i in range(0, len(docs), gd.CHUNK_DOCS):
        chunk = [d for d in docs[i : i + gd.CHUNK_DOCS] if in_validation(d, fraction) == validation]
        stream = tokenize_documents(chunk, tokenizer)
        out.append(pack(stream, block_size))
    return np.concatenate(out) if out else np.zeros((0, block_size))


def all_blocks(ds):
    return np.stack([ds.block(i) for i in range(len(ds))]) if len(ds) else np.zeros((0, ds.block_size))


def test_stdlib_split_is_deterministic_and_disjoint(tmp_path):
    docs = stdlib_documents()
    assert docs == sorted(docs) and len(docs) > 300
    paths = [p for p, _ in docs]
    assert not [p for p in paths if "/test/" in f"/{p}" or p.startswith("encodings/")]
    cfg = DataConfig(cache_dir=str(tmp_path))
    train, validation = (list(x) for x in load_documents(cfg))
    assert (train, validation) == tuple(list(x) for x in load_documents(cfg))

    text = dict(docs)
    val_paths = {p for p in paths if in_validation(p, cfg.validation_fraction)}
    assert validation == [text[p] for p in paths if p in val_paths]
    assert 0.02 < len(val_paths) / len(paths) < 0.1
    train_pool = {text[p] for p in paths if p not in val_paths}
    assert all(t in train_pool for t in train[:-1])
    assert STDLIB_MAX_BYTES - 4 < sum(len(t.encode()) for t in train) <= STDLIB_MAX_BYTES  # cut at a character
    assert not set(train) & set(validation)


def test_take_bytes_cuts_last_text_without_splitting_characters():
    assert list(take_bytes(["abc", "déf", "ghi"], 5)) == ["abc", "d"]  # "é" is 2 bytes: dropped, not split
    assert list(take_bytes(["abc", "def"], 100)) == ["abc", "def"]


def test_bpe_round_trips_and_is_cached_by_text(tokenizer, tmp_path):
    assert len(tokenizer) == 300
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    text = "class Foo:\n    def bar(self, x):\n        return {'é': x}  # ünïcode\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    tokenizer.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")(text, add_special_tokens=False)["input_ids"] == ids

    tcfg = TokenizerConfig(train_bpe=True, vocab_size=270)
    first = build_tokenizer(tcfg, DOCS, str(tmp_path))
    assert build_tokenizer(tcfg, DOCS, str(tmp_path)).name_or_path == first.name_or_path
    assert build_tokenizer(tcfg, DOCS[:30], str(tmp_path)).name_or_path != first.name_or_path
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_pack_chunk_is_documents_plus_eos_cut_into_blocks(tokenizer):
    expected = []
    for doc in DOCS:
        expected += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    np.testing.assert_array_equal(tokenize_documents(DOCS, tokenizer, batch_docs=7), expected)  # the fast encoder = the tokenizer
    blocks, tokens = pack_chunk(DOCS, tokenizer, 32, np.uint16)
    assert tokens == len(expected) and blocks.dtype == np.uint16 and blocks.shape == (len(expected) // 32, 32)
    np.testing.assert_array_equal(blocks.reshape(-1), expected[: blocks.size])


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "txt"])
def test_local_files_pieces_and_prepared_blocks(kind, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(gd, "CHUNK_DOCS", 7)  # several chunks per piece
    data = tmp_path / "corpus"
    data.mkdir()
    if kind == "jsonl":
        write_jsonl(data / "a.jsonl", DOCS[:30])
        write_jsonl(data / "b.jsonl", DOCS[30:])
    elif kind == "parquet":
        pd.DataFrame({"body": DOCS[:30]}).to_parquet(data / "a.parquet", row_group_size=4)
        pd.DataFrame({"body": DOCS[30:]}).to_parquet(data / "b.parquet", row_group_size=4)
    else:  # blank lines separate documents (DOCS have none inside)
        (data / "a.txt").write_text("\n\n".join(d.rstrip("\n") for d in DOCS[:30]))
        (data / "b.txt").write_text("\n\n".join(d.rstrip("\n") for d in DOCS[30:]))
    docs = DOCS if kind != "txt" else [d.rstrip("\n") for d in DOCS]
    source = str(data) if kind != "parquet" else str(data / "*.parquet")
    common = dict(source=source, text_field="body" if kind == "parquet" else "text", validation_fraction=0.2, block_size=16)
    cfg = DataConfig(**common, cache_dir=str(tmp_path / "c1"), num_proc=1)
    # Small pieces: files are cut at document boundaries (byte ranges, row groups) into many pieces.
    monkeypatch.setattr(gd, "PIECE_BYTES", 300)
    pieces = plan_pieces(cfg)
    assert len(pieces) > 6
    train, validation = load_documents(cfg)
    assert list(train) == [d for d in docs if not in_validation(d, 0.2)]  # in order, none lost or doubled
    assert list(validation) == [d for d in docs if in_validation(d, 0.2)] and list(validation)

    train_ds, val_ds = build_datasets(cfg, tokenizer)
    assert isinstance(train_ds, PackedBlocks) and isinstance(train_ds._map(0), np.memmap)
    expected = np.concatenate([reference_blocks([d for d, _ in gd.read_piece(p, cfg)], tokenizer, 16, False, 0.2)
                               for p in pieces])
    np.testing.assert_array_equal(all_blocks(train_ds), expected)
    assert len(val_ds) > 0
    row = train_ds[0]
    assert row["input_ids"].dtype == torch.int64 and row["input_ids"].shape == (16,) and row["labels"] is row["input_ids"]
    # Two processes prepare exactly the same blocks (pieces are independent).
    two, two_val = build_datasets(DataConfig(**common, cache_dir=str(tmp_path / "c2"), num_proc=2), tokenizer)
    np.testing.assert_array_equal(all_blocks(two), expected)
    np.testing.assert_array_equal(all_blocks(two_val), all_blocks(val_ds))


def test_cache_entry_manifest_reuse_and_keys(tokenizer, tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cfg = DataConfig(source=str(tmp_path / "docs.jsonl"), block_size=16, cache_dir=str(tmp_path / "cache"))
    train, _ = build_datasets(cfg, tokenizer)
    first = train.block(0).tolist()
    path = dataset_cache_path(cfg, tokenizer)
    meta = json.loads((path / "manifest.json").read_text())
    assert meta["dtype"] == "uint16" and meta["block_size"] == 16 and meta["tokenizer"] == gd._tokenizer_fingerprint(tokenizer)
    assert meta["totals"]["train"]["used_blocks"] == len(train) and meta["totals"]["train"]["tokens"] >= 16 * len(train)
    assert (path / "train-00000.bin").stat().st_size == len(train) * 16 * 2  # flat uint16 tokens

    # A second call loads the entry (a marker written into it comes back) instead of re-tokenizing.
    marker = np.full((len(train), 16), 7, dtype=np.uint16)
    marker.tofile(path / "train-00000.bin")
    assert (build_datasets(cfg, tokenizer)[0].block(0) == 7).all()

    # Another block size, tokenizer or file content is another entry.
    assert dataset_cache_path(DataConfig(**{**cfg.__dict__, "block_size": 8}), tokenizer) != path
    other = build_tokenizer(TokenizerConfig(train_bpe=True, vocab_size=280), DOCS, str(tmp_path / "tok"))
    assert dataset_cache_path(cfg, other) != path
    assert dataset_cache_path(DataConfig(**{**cfg.__dict__, "num_proc": 2}), tokenizer) == path  # same blocks
    # An entry whose manifest names another tokenizer or whose files are short is rebuilt, never read.
    meta["tokenizer"] = gd._tokenizer_fingerprint(other)
    (path / "manifest.json").write_text(json.dumps(meta))
    rebuilt, _ = build_datasets(cfg, tokenizer)
    assert rebuilt.block(0).tolist() == first
    with open(path / "train-00000.bin", "r+b") as f:
        f.truncate(10)
    assert build_datasets(cfg, tokenizer)[0].block(0).tolist() == first
    write_jsonl(tmp_path / "docs.jsonl", DOCS[:50])
    assert dataset_cache_path(cfg, tokenizer) != path


def test_caps_cut_at_blocks_and_bytes(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(gd, "PIECE_BYTES", 400)
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    common = dict(source=str(tmp_path / "docs.jsonl"), block_size=16, validation_fraction=0.2, num_proc=2)
    full, full_val = build_datasets(DataConfig(**common, cache_dir=str(tmp_path / "a")), tokenizer)
    capped, capped_val = build_datasets(DataConfig(**common, max_train_tokens=100, max_eval_tokens=40,
                                                   cache_dir=str(tmp_path / "b")), tokenizer)
    assert (len(capped), len(capped_val)) == (100 // 16, 40 // 16)
    np.testing.assert_array_equal(all_blocks(capped), all_blocks(full)[:6])
    np.testing.assert_array_equal(all_blocks(capped_val), all_blocks(full_val)[:2])
    # A byte cap reads the training text in order up to that many bytes, as one reader would.
    train_docs = [d for d in DOCS if not in_validation(d, 0.2)]
    cfg = DataConfig(**common, max_train_bytes=1000, cache_dir=str(tmp_path / "c"))
    bytes_capped, _ = build_datasets(cfg, tokenizer)
    meta = json.loads((dataset_cache_path(cfg, tokenizer) / "manifest.json").read_text())
    assert meta["totals"]["train"]["bytes"] == 1000
    assert list(load_documents(cfg)[0]) == list(take_bytes(train_docs, 1000))
    assert 0 < len(bytes_capped) < len(full)


def test_killed_preparation_is_rebuilt_never_read(tokenizer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = Path(json.__file__).read_text()
    for i in range(24):  # enough work that the kill lands half way
        write_jsonl(corpus / f"part-{i:02d}.jsonl", [f"# {i}.{j}\n" + text[j * 101 :][:1500] for j in range(60)])
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    args = [sys.executable, "scripts/prepare_data.py", "--config", "recipes/tiny.yaml", "--data.source",
            str(corpus), "--data.cache_dir", str(tmp_path / "cache"), "--tokenizer.name_or_path", str(tok_dir),
            "--tokenizer.train_bpe", "false", "--data.block_size", "16", "--data.max_eval_tokens", "1024",
            "--model.max_position_embeddings", "128", "--data.num_proc", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "cache").glob(".blocks-*.tmp-*/train-00002.bin")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = tmp_path / "cache"
    temps = list(cache.glob(".blocks-*.tmp-*"))
    assert temps and not list(cache.glob("blocks-*")), "killed half way: only a temp dir, no entry"

    cfg = DataConfig(source=str(corpus), block_size=16, max_eval_tokens=1024, cache_dir=str(cache), num_proc=1)
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    train, _ = build_datasets(cfg, tok)
    assert not any(t.exists() for t in temps)  # the dead run's temp dir is gone
    meta = json.loads((dataset_cache_path(cfg, tok) / "manifest.json").read_text())
    assert len(meta["pieces"]) == 24 and len(train) == meta["totals"]["train"]["used_blocks"] > 0


def test_dead_temp_dirs_removed_only_for_this_host(tmp_path):
    """On a cache shared by several nodes a pid is only meaningful on its own host: another node's
    build in progress (whose pid is dead here) must survive this node's clean-up."""
    from growth.data import _host, _remove_dead_temps, _temp_dir

    final = tmp_path / "blocks-abc"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine_dead = tmp_path / f".blocks-abc.tmp-{_host()}-{dead.pid}-0123abcd"
    other_node = tmp_path / f".blocks-abc.tmp-{_host()}x-{dead.pid}-0123abcd"
    mine_alive = _temp_dir(final)  # this process: alive
    for d in (mine_dead, other_node):
        d.mkdir()
    _remove_dead_temps(final)
    assert not mine_dead.exists() and other_node.exists() and mine_alive.exists()
    assert mine_alive.name.startswith(f".blocks-abc.tmp-{_host()}-{os.getpid()}-")


def test_streaming_shares_are_disjoint_and_cover_the_prepared_blocks(tokenizer, tmp_path):
    shards = tmp_path / "fineweb"
    shards.mkdir()
    docs = [" ".join(f"w{i}x{k}" for k in range(3 + i % 7 * 5)) for i in range(60)]  # no two blocks alike
    for i in range(6):  # FineWeb-Edu-shaped: many parquet shards with a `text` column
        pd.DataFrame({"text": docs[i::6], "id": [f"doc{j}" for j in range(i, 60, 6)]}).to_parquet(shards / f"{i:03d}.parquet")
    common = dict(source=str(shards / "*.parquet"), block_size=8, validation_fraction=0.1, max_eval_tokens=64)
    prepared, _ = build_datasets(DataConfig(**common, cache_dir=str(tmp_path / "p")), tokenizer)
    stream, val = build_datasets(DataConfig(**common, streaming=True, cache_dir=str(tmp_path / "s")), tokenizer)
    assert isinstance(stream, StreamingBlocks) and isinstance(val, PackedBlocks) and len(val) == 8
    expected = sorted(map(tuple, all_blocks(prepared).tolist()))
    # One reader reads the prepared blocks, in order.
    np.testing.assert_array_equal(np.stack(list(stream._blocks(0, 1))), all_blocks(prepared))
    for readers in (4, 9):  # 2 ranks x 2 workers (pieces >= readers) and 3 x 3 (fewer pieces than readers)
        shares = [[tuple(b.tolist()) for b in stream._blocks(r, readers)] for r in range(readers)]
        assert all(shares)
        if readers <= 6:  # whole pieces: the shares are exactly the prepared blocks, split
            assert sorted(sum(shares, [])) == expected
        seen = [set(s) for s in shares]
        assert all(len(s) == len(set(s)) for s in shares) and len(expected) == len(set(expected))
        assert all(not (seen[a] & seen[b]) for a in range(readers) for b in range(a))


def test_streaming_dataloader_workers_round_robin_and_resume_position(tokenizer, tmp_path):
    shards = tmp_path / "fineweb"
    shards.mkdir()
    for i in range(4):
        pd.DataFrame({"text": DOCS[i::4] * 3}).to_parquet(shards / f"{i:03d}.parquet")
    cfg = DataConfig(source=str(shards / "*.parquet"), block_size=8, validation_fraction=0.0, streaming=True,
                     max_train_tokens=8 * 40, cache_dir=str(tmp_path / "c"))
    stream, val = build_datasets(cfg, tokenizer)
    assert val is None

    def batches(skip=0, placeholders=False, n=12):
        stream.batch_size, stream.skip_batches, stream.placeholders = 3, skip, placeholders
        loader = torch.utils.data.DataLoader(stream, batch_size=3, num_workers=2)
        out = []
        for batch in loader:
            out.append(batch["input_ids"])
            if len(out) == n:
                return out

    full = batches()
    # The cap is where each reader starts over: the stream is endless, and repeats.
    assert all(b.shape == (3, 8) for b in full)
    for skip in (1, 4, 5):
        resumed = batches(skip=skip, n=12 - skip)
        for a, b in zip(full[skip:], resumed):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        with_placeholders = batches(skip=skip, placeholders=True)
        assert all((b == 0).all() for b in with_placeholders[:skip])  # what the Trainer's own skip discards
        for a, b in zip(full[skip:], with_placeholders[skip:]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [_reader_batches(5, 2, w) for w in (0, 1)] == [3, 2]


def test_publish_keeps_the_first_copy(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "who").write_text(name)
    _publish(tmp_path / "a", tmp_path / "entry")
    _publish(tmp_path / "b", tmp_path / "entry")
    assert (tmp_path / "entry" / "who").read_text() == "a"
    assert sorted(os.listdir(tmp_path)) == ["entry"]


def _no_eos_tokenizer(tokenizer, path):
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    tok.save_pretrained(path)
    return str(path)


def test_bad_input_is_one_clear_error_before_compute(tokenizer, tmp_path):
    def error(setup, **kwargs):
        cfg = DataConfig(**{"cache_dir": str(tmp_path / "cache"), **kwargs}) if setup is None else setup()
        with pytest.raises(ValueError) as info:
            build_datasets(cfg, tokenizer)
        assert not list((tmp_path / "cache").glob("blocks-*"))  # nothing published
        return str(info.value)

    (tmp_path / "empty.jsonl").write_text("")
    assert error(None, source=str(tmp_path / "empty.jsonl")) == f"data.source: '{tmp_path / 'empty.jsonl'}' is empty"
    lines = [json.dumps({"text": d}) for d in DOCS[:5]]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines[:3] + ['{"text": "unclosed'] + lines[3:]) + "\n")
    msg = error(None, source=str(tmp_path / "bad.jsonl"), validation_fraction=0.0)
    assert msg.startswith(f"data.source: '{tmp_path / 'bad.jsonl'}' line 4: malformed JSON")
    (tmp_path / "first.jsonl").write_text('{"text": oops}\n')
    assert "line 1: malformed JSON" in error(None, source=str(tmp_path / "first.jsonl"))
    (tmp_path / "blob.txt").write_bytes(b"text\n\n" + bytes(range(256)) * 4)
    assert error(None, source=str(tmp_path / "blob.txt")).startswith(f"data.source: '{tmp_path / 'blob.txt'}' is not text")
    pd.DataFrame({"content": DOCS}).to_parquet(tmp_path / "x.parquet")
    assert error(None, source=str(tmp_path / "x.parquet")) == (
        f"data.text_field: column 'text' not in '{tmp_path / 'x.parquet'}' (columns: ['content'])")
    write_jsonl(tmp_path / "short.jsonl", ["x = 1"])
    assert "train split" in error(None, source=str(tmp_path / "short.jsonl"), validation_fraction=0.0)
    with pytest.raises(ValueError, match=r"data.source: glob '.*nothing/\*.parquet' matches no files"):
        DataConfig(source=str(tmp_path / "nothing" / "*.parquet"))
    with pytest.raises(ValueError, match="tokenizer.name_or_path: '.*' has no eos token"):
        build_tokenizer(TokenizerConfig(name_or_path=_no_eos_tokenizer(tokenizer, tmp_path / "noeos")))


def test_train_script_prints_data_errors_as_one_line(tmp_path, capsys):
    from growth.run import main

    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"\n')
    code = main(["--config", "recipes/tiny.yaml", "--data.source", str(tmp_path / "bad.jsonl"),
                 "--data.cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: data.source: '{tmp_path / 'bad.jsonl'}' line 2: malformed JSON "
                                 "(Expecting ',' delimiter: line 1 column 13 (char 12))"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": 0}, "data.block_size must be a positive integer, got 0"),
        ({"source": "missing.txt"}, "data.source: file 'missing.txt' does not exist"),
        ({"source": "nothing/*.jsonl"}, r"data.source: glob 'nothing/\*.jsonl' matches no files"),
        ({"source": "hf:"}, "data.source: hub dataset name is empty"),
        ({"validation_fraction": 1.0}, r"data.validation_fraction must be in \[0, 1\), got 1.0"),
        ({"max_train_bytes": -5}, "data.max_train_bytes must be a positive integer, got -5"),
        ({"num_proc": 0}, "data.num_proc must be a positive integer, got 0"),
        ({"max_eval_tokens": 64}, "data.max_eval_tokens must be at least data.block_size=128, got 64"),
        ({"hub_config": "en"}, "data.hub_config is only for hub sources"),
        ({"streaming": True}, "data.streaming is for hub and local file sources, got source 'stdlib'"),
        ({"source": "hf:org/name", "streaming": True}, "data.max_eval_tokens must be set when data.streaming"),
        ({"source": "hf:org/name", "streaming": True, "max_eval_tokens": 256, "max_train_bytes": 9},
         "data.max_train_bytes is not used when data.streaming is true"),
        ({"text_field": ""}, "data.text_field must be a non-empty string, got ''"),
    ],
)
def test_bad_data_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_bad_local_files(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data.source: unsupported file type '.csv'"):
        DataConfig(source=str(tmp_path / "x.csv"))
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(ValueError, match="data.source: .* mixes file types"):
        DataConfig(source=str(tmp_path))
    cfg = DataConfig(source=str(tmp_path / "b.jsonl"), text_field="content", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"data.text_field: column 'content' not in '.*b.jsonl' line 1 \(keys: \['text'\]\)"):
        plan_pieces(cfg)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "tokenizer: set exactly one of name_or_path or train_bpe, got name_or_path=None and train_bpe=False"),
        ({"name_or_path": "gpt2", "train_bpe": True}, "tokenizer: set exactly one"),
        ({"train_bpe": True, "vocab_size": 100}, "tokenizer.vocab_size must be at least 258"),
        ({"train_bpe": True, "train_bytes": 0}, "tokenizer.train_bytes must be a positive integer, got 0"),
    ],
)
def test_bad_tokenizer_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenizerConfig(**kwargs)


def test_unknown_hub_names_give_clear_errors(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    # Offline, so the test neither waits on network retries nor depends on the hub's contents.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = DataConfig(source="hf:nobody/no-such-dataset", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data.source: could not load hub dataset 'nobody/no-such-dataset'"):
        load_documents(cfg)
    with pytest.raises(ValueError, match="tokenizer.name_or_path: could not load 'nobody/no-such-tokenizer'"):
        build_tokenizer(TokenizerConfig(name_or_path="nobody/no-such-tokenizer"))
