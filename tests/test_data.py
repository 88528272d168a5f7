"""Data layer: stdlib split, BPE tokenizer, packing, cache, local files, config errors."""

import json
import os

import datasets
import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from growth.data import (
    STDLIB_MAX_BYTES,
    DataConfig,
    TokenizerConfig,
    _publish,
    build_datasets,
    build_tokenizer,
    dataset_cache_path,
    in_validation,
    load_documents,
    pack,
    stdlib_documents,
    take_bytes,
    tokenize_documents,
)

DOCS = [f"def f{i}(x):\n    return x * {i} + {i * i}  # doc {i} of the fixture\n" * (1 + i % 5) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [text for _, text in stdlib_documents()[:20]]
    tcfg = TokenizerConfig(train_bpe=True, vocab_size=300)
    return build_tokenizer(tcfg, list(take_bytes(texts, 100_000)), str(tmp_path_factory.mktemp("tok")))


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))


def test_stdlib_split_is_deterministic_and_disjoint(tmp_path):
    docs = stdlib_documents()
    assert docs == sorted(docs) and len(docs) > 300
    paths = [p for p, _ in docs]
    assert not [p for p in paths if "/test/" in f"/{p}" or p.startswith("encodings/")]
    cfg = DataConfig(cache_dir=str(tmp_path))
    train, validation = load_documents(cfg)
    assert (train, validation) == load_documents(cfg)

    text = dict(docs)
    val_paths = {p for p in paths if in_validation(p, cfg.validation_fraction)}
    assert validation == [text[p] for p in paths if p in val_paths]
    assert 0.02 < len(val_paths) / len(paths) < 0.1
    # Training text is the non-held-out documents only, up to the default byte cap.
    train_pool = {text[p] for p in paths if p not in val_paths}
    assert all(t in train_pool for t in train[:-1])
    assert STDLIB_MAX_BYTES - 4 < sum(len(t.encode()) for t in train) <= STDLIB_MAX_BYTES  # cut at a character
    assert not set(train) & set(validation)


def test_take_bytes_cuts_last_text_without_splitting_characters():
    assert list(take_bytes(["abc", "déf", "ghi"], 5)) == ["abc", "d"]  # "é" is 2 bytes: dropped, not split
    assert list(take_bytes(["abc", "def"], 100)) == ["abc", "def"]


def test_bpe_round_trips_through_save_pretrained(tokenizer, tmp_path):
    assert len(tokenizer) == 300
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "class Foo:\n    def bar(self, x):\n        return {'é': x}  # ünïcode\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text

    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        assert getattr(reloaded, name) == getattr(tokenizer, name)


def test_bpe_is_cached_by_text(tmp_path):
    tcfg = TokenizerConfig(train_bpe=True, vocab_size=270)
    first = build_tokenizer(tcfg, DOCS, str(tmp_path))
    assert first.name_or_path.startswith(str(tmp_path / "tokenizer-"))
    assert build_tokenizer(tcfg, DOCS, str(tmp_path)).name_or_path == first.name_or_path
    other = build_tokenizer(tcfg, DOCS[:30], str(tmp_path))
    assert other.name_or_path != first.name_or_path
    assert len([p for p in os.listdir(tmp_path) if p.startswith("tokenizer-")]) == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_tokenize_and_pack(tokenizer):
    stream = tokenize_documents(DOCS, tokenizer, batch_docs=7)
    expected = []
    for doc in DOCS:
        expected += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    np.testing.assert_array_equal(stream, np.array(expected, dtype=np.int32))

    blocks = pack(stream, 32)
    assert blocks.shape == (len(stream) // 32, 32)
    np.testing.assert_array_equal(blocks.reshape(-1), stream[: blocks.size])
    # Reading stops once max_tokens are in hand; the stream is cut exactly.
    np.testing.assert_array_equal(tokenize_documents(DOCS, tokenizer, max_tokens=100, batch_docs=2), stream[:100])


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "txt"])
def test_local_files(kind, tokenizer, tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    if kind == "jsonl":
        write_jsonl(data / "a.jsonl", DOCS[:30])
        write_jsonl(data / "b.jsonl", DOCS[30:])
    elif kind == "parquet":
        pd.DataFrame({"body": DOCS[:30]}).to_parquet(data / "a.parquet")
        pd.DataFrame({"body": DOCS[30:]}).to_parquet(data / "b.parquet")
    else:  # blank lines separate documents (DOCS have none inside)
        (data / "a.txt").write_text("\n\n".join(d.rstrip("\n") for d in DOCS[:30]))
        (data / "b.txt").write_text("\n\n".join(d.rstrip("\n") for d in DOCS[30:]))
    docs = DOCS if kind != "txt" else [d.rstrip("\n") for d in DOCS]
    source = str(data) if kind != "parquet" else str(data / "*.parquet")
    cfg = DataConfig(
        source=source,
        text_field="body" if kind == "parquet" else "text",
        validation_fraction=0.2,
        block_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    train, validation = load_documents(cfg)
    # Files in sorted order, rows held out by the hash of their index.
    assert list(train) == [d for i, d in enumerate(docs) if not in_validation(str(i), 0.2)]
    assert list(validation) == [d for i, d in enumerate(docs) if in_validation(str(i), 0.2)]
    assert list(validation) and list(train) == list(train)  # non-empty, and iterable twice

    train_ds, val_ds = build_datasets(cfg, tokenizer)
    assert train_ds.column_names == ["input_ids", "labels"]
    blocks = np.array(train_ds["input_ids"])
    assert blocks.shape[1] == 16 and len(val_ds) > 0
    np.testing.assert_array_equal(blocks, np.array(train_ds["labels"]))
    np.testing.assert_array_equal(blocks.reshape(-1), tokenize_documents(train, tokenizer)[: blocks.size])


def test_streaming_reads_the_same_documents_up_to_the_token_caps(tokenizer, tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    common = dict(source=str(tmp_path / "docs.jsonl"), validation_fraction=0.2, block_size=16)
    full_train, full_val = build_datasets(DataConfig(**common, cache_dir=str(tmp_path / "a")), tokenizer)
    cfg = DataConfig(**common, streaming=True, max_train_tokens=100, max_eval_tokens=40, cache_dir=str(tmp_path / "b"))
    train, validation = load_documents(cfg)
    assert list(train) == [d for i, d in enumerate(DOCS) if not in_validation(str(i), 0.2)]
    stream_train, stream_val = build_datasets(cfg, tokenizer)
    assert (len(stream_train), len(stream_val)) == (100 // 16, 40 // 16)
    assert stream_train["input_ids"] == full_train["input_ids"][:6]
    assert stream_val["input_ids"] == full_val["input_ids"][:2]


def test_build_datasets_reuses_cache(tokenizer, tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cfg = DataConfig(source=str(tmp_path / "docs.jsonl"), block_size=16, cache_dir=str(tmp_path / "cache"))
    train, _ = build_datasets(cfg, tokenizer)
    path = dataset_cache_path(cfg, tokenizer)
    assert all(f["filename"].startswith(str(path)) for f in train.cache_files)  # memory-mapped from the cache
    meta = json.loads((path / "meta.json").read_text())
    assert meta["train"]["blocks"] == len(train) and meta["train"]["tokens"] >= 16 * len(train)

    # Replace the cached training blocks: the second call must return them instead of retokenizing.
    marker = datasets.Dataset.from_dict({"input_ids": [[7] * 16], "labels": [[7] * 16]})
    marker.save_to_disk(str(tmp_path / "marker"))
    os.rename(path / "train", tmp_path / "old")
    os.rename(tmp_path / "marker", path / "train")
    again, _ = build_datasets(cfg, tokenizer)
    assert again["input_ids"] == [[7] * 16]

    # A different block size (or tokenizer, or file content) is another cache entry.
    assert dataset_cache_path(DataConfig(**{**cfg.__dict__, "block_size": 8}), tokenizer) != path
    write_jsonl(tmp_path / "docs.jsonl", DOCS[:50])
    assert dataset_cache_path(cfg, tokenizer) != path


def test_blocks_become_int64_tensors(tokenizer, tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cfg = DataConfig(source=str(tmp_path / "docs.jsonl"), block_size=16, cache_dir=str(tmp_path / "cache"))
    train, _ = build_datasets(cfg, tokenizer)
    row = train.with_format("torch")[0]
    assert row["labels"].dtype == torch.int64 and row["input_ids"].shape == (16,)


def test_publish_keeps_the_first_copy(tmp_path):
    # Two ranks building the same entry: the first rename wins, the second copy is dropped.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "who").write_text(name)
    _publish(tmp_path / "a", tmp_path / "entry")
    _publish(tmp_path / "b", tmp_path / "entry")
    assert (tmp_path / "entry" / "who").read_text() == "a"
    assert sorted(os.listdir(tmp_path)) == ["entry"]


def test_too_little_text_is_an_error(tokenizer, tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", ["x = 1"])
    cfg = DataConfig(source=str(tmp_path / "docs.jsonl"), validation_fraction=0.0, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"train split .* fewer tokens than one block \(data.block_size=128\)"):
        build_datasets(cfg, tokenizer)
    assert sorted(os.listdir(tmp_path)) == ["docs.jsonl", "hf_datasets"]  # the half-built entry was removed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": 0}, "data.block_size must be a positive integer, got 0"),
        ({"source": "missing.txt"}, "data.source: file 'missing.txt' does not exist"),
        ({"source": "nothing/*.jsonl"}, r"data.source: glob 'nothing/\*.jsonl' matches no files"),
        ({"source": "hf:"}, "data.source: hub dataset name is empty"),
        ({"validation_fraction": 1.0}, r"data.validation_fraction must be in \[0, 1\), got 1.0"),
        ({"max_train_bytes": -5}, "data.max_train_bytes must be a positive integer, got -5"),
        ({"max_eval_tokens": 64}, "data.max_eval_tokens must be at least data.block_size=128, got 64"),
        ({"hub_config": "en"}, "data.hub_config is only for hub sources"),
        ({"validation_split": "validation"}, "data.validation_split is only for hub sources"),
        ({"streaming": True}, "data.streaming is for hub and local file sources, got source 'stdlib'"),
        ({"source": "hf:org/name", "streaming": True}, "data.max_train_tokens must be set when data.streaming"),
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
    (tmp_path / "bad.jsonl").write_text('{"text": "unclosed\n')
    with pytest.raises(ValueError, match=r"data.source: could not read '.*bad.jsonl' as json"):
        load_documents(DataConfig(source=str(tmp_path / "bad.jsonl"), cache_dir=str(tmp_path / "c")))
    cfg = DataConfig(source=str(tmp_path / "b.jsonl"), text_field="content", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"data.text_field: column 'content' not in .* \(columns: \['text'\]\)"):
        load_documents(cfg)


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
    # Offline, so the test neither waits on network retries nor depends on the hub's contents.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = DataConfig(source="hf:nobody/no-such-dataset", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data.source: could not load hub dataset 'nobody/no-such-dataset'"):
        load_documents(cfg)
    with pytest.raises(ValueError, match="tokenizer.name_or_path: could not load 'nobody/no-such-tokenizer'"):
        build_tokenizer(TokenizerConfig(name_or_path="nobody/no-such-tokenizer"))
