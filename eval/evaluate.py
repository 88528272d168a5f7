"""Validation loss, perplexity and bits per byte of a saved HF causal-LM checkpoint.

    python -m eval.evaluate out/run/checkpoint-1000 --data data/val.txt
    python -m eval.evaluate out/run --data data/val.jsonl --text_field text --block_size 512 --max_tokens 1000000 --out val.json
    python -m eval.evaluate out/run --data hf:wikitext:wikitext-103-raw-v1 --split validation --max_tokens 2000000
    python eval/evaluate.py out/run --data data/val.parquet --tokenizer out/tokenizer --device cpu

Prints one JSON line: loss (mean NLL per scored token, nats), perplexity (exp(loss)),
bits_per_byte (total NLL in bits / UTF-8 bytes of the scored text), tokens, bytes, documents, ...

Data (--data): a local .txt (documents separated by blank lines, as in training; --txt_docs file
makes the whole file one document), .jsonl (one JSON object per line, text in --text_field) or
.parquet (column --text_field), or hf:NAME[:CONFIG] for a hub dataset, streamed (--split, default
"validation"); offline, a hub name fails with a clear error.

How text becomes scored tokens (what bits per byte is exact for):
- Each document is tokenized without special tokens; the stream is eos doc_1 eos doc_2 eos ...
  doc_n eos: documents separated by eos as in training (growth/data.py), plus one leading eos so
  the first token of the first document is predicted too.
- The stream is cut into windows of block_size + 1 tokens that overlap by one token (stride
  block_size): each window's first block_size tokens are the input, its last block_size tokens the
  targets. So every token after the leading eos is scored exactly once, with at most block_size
  tokens of context (the context restarts at each window, as in training on packed blocks). The
  last window may be shorter.
- Scored text = the documents' text; eos tokens are scored (their NLL counts, as in the training
  loss) and carry 0 bytes. bytes = sum of len(doc.encode("utf-8")).
- --max_tokens caps the stream length. The document that does not fit is cut as text, at a
  character, before tokenizing (so its bytes are exactly those of the scored prefix) and gets no
  closing eos; the cut's last token can differ from the token the whole document would have had.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

if __package__ in (None, ""):  # run as `python eval/evaluate.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

HUB_PREFIX = "hf:"


# ---------------------------------------------------------------------------------------------
# Documents


def split_paragraphs(text: str) -> list[str]:
    """Documents of a .txt file: blocks separated by blank lines (whitespace-only lines count)."""
    return [p.strip("\n") for p in re.split(r"\n[ \t\r\f\v]*\n", text) if p.strip()]


def iter_documents(data: str, text_field: str = "text", split: str = "validation", txt_docs: str = "paragraph") -> Iterator[str]:
    """Texts of `data` (see the module docstring), lazily."""
    if data.startswith(HUB_PREFIX):
        yield from _hub_documents(data[len(HUB_PREFIX) :], text_field, split)
        return
    path = Path(data)
    if not path.is_file():
        raise ValueError(f"--data: file {data!r} does not exist (for a hub dataset use hf:NAME)")
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if txt_docs == "file":
            yield text
        elif txt_docs == "paragraph":
            yield from split_paragraphs(text)
        else:
            raise ValueError(f"--txt_docs: expected 'paragraph' or 'file', got {txt_docs!r}")
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    yield _field(json.loads(line), text_field, f"{data}:{i}")
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise ValueError(f"--text_field: column {text_field!r} not in {data!r} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(columns=[text_field], batch_size=1000):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    else:
        raise ValueError(f"--data: unsupported file type {path.suffix!r} for {data!r} (expected .txt, .jsonl, .parquet or hf:NAME)")


def _field(row: dict, text_field: str, where: str) -> str:
    if text_field not in row:
        raise ValueError(f"--text_field: {where} has no field {text_field!r} (fields: {sorted(row)})")
    return row[text_field]


def _hub_documents(spec: str, text_field: str, split: str) -> Iterator[str]:
    import datasets

    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
    except Exception as e:  # offline, not found, bad config or split: each a different type
        raise ValueError(
            f"--data: could not load hub dataset {name!r} (config={config or None!r}, split={split!r}): "
            f"{type(e).__name__}: {e}. Offline? Pass a local .txt/.jsonl/.parquet file instead."
        ) from e
    for i, row in enumerate(ds):
        yield _field(row, text_field, f"hf:{spec} row {i}")


# ---------------------------------------------------------------------------------------------
# Token stream


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]


def _fit(tokenizer, text: str, budget: int) -> tuple[str, list[int], bool]:
    """(text, ids, whole): `text` and its ids if they number <= budget (whole=True), else the
    longest prefix found, cut at a character, whose ids do (whole=False; maybe empty)."""
    # Probe a prefix first, so a huge one-document file is not tokenized whole for a small budget.
    probe = text[: 64 * budget + 1024]
    ids = _ids(tokenizer, probe)
    if len(ids) <= budget:
        if len(probe) == len(text):
            return text, ids, True
        probe, ids = text, _ids(tokenizer, text)  # the probe was too short to fill the budget
        if len(ids) <= budget:
            return text, ids, True
    cut = len(probe) * budget // len(ids)
    while cut > 0:
        ids = _ids(tokenizer, probe[:cut])
        if len(ids) <= budget:
            return probe[:cut], ids, False
        cut = min(cut - 1, cut * budget // len(ids))
    return "", [], False


def build_stream(docs: Iterable[str], tokenizer, max_tokens: int | None = None) -> tuple[list[int], int, int]:
    """(stream, bytes, documents): the token stream "eos d1 eos d2 eos ... dn eos" (see the module
    docstring), the UTF-8 bytes of the scored text and the number of documents (a cut one counts)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token to separate documents")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"--max_tokens: must be at least 2 (one separator and one scored token), got {max_tokens}")
    stream, n_bytes, n_docs = [eos], 0, 0
    for text in docs:
        if max_tokens is None:
            ids, whole = _ids(tokenizer, text), True
        elif len(stream) >= max_tokens:
            break
        else:
            text, ids, whole = _fit(tokenizer, text, max_tokens - len(stream))
        if ids:
            stream += ids
            n_bytes += len(text.encode("utf-8"))
            n_docs += 1
        if not whole:
            break
        if ids:
            stream.append(eos)
    if max_tokens is not None:
        stream = stream[:max_tokens]  # a closing eos past the cap: 0 bytes, so bytes stay exact
    return stream, n_bytes, n_docs


# ---------------------------------------------------------------------------------------------
# Scoring


@torch.no_grad()
def score_stream(model, stream: list[int], block_size: int, batch_size: int = 8, progress: bool = True) -> tuple[float, int]:
    """(total NLL in nats, scored tokens) of every token after the first, in windows of
    block_size + 1 tokens overlapping by one (see the module docstring)."""
    if block_size < 1:
        raise ValueError(f"--block_size: must be positive, got {block_size}")
    if batch_size < 1:
        raise ValueError(f"--batch_size: must be positive, got {batch_size}")
    n_pos = getattr(model.config, "max_position_embeddings", None)
    if n_pos is not None and block_size > n_pos:
        raise ValueError(f"--block_size: {block_size} exceeds the model's max_position_embeddings {n_pos}")
    device = next(model.parameters()).device
    ids = torch.tensor(stream, dtype=torch.long)
    starts = list(range(0, len(ids) - 1, block_size))
    full = [s for s in starts if s + block_size + 1 <= len(ids)]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    if len(full) < len(starts):
        batches.append([starts[-1]])  # the shorter last window, alone
    total, count = torch.zeros((), dtype=torch.float64), 0
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress, file=sys.stderr):
        windows = torch.stack([ids[s : s + block_size + 1] for s in batch]).to(device)  # (B, T + 1)
        logits = model(input_ids=windows[:, :-1]).logits  # (B, T, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten(), reduction="none")  # (B * T,)
        total += nll.double().sum().cpu()
        count += nll.numel()
    return total.item(), count


def load_model_and_tokenizer(checkpoint: str, tokenizer: str | None = None, device: str | None = None, dtype: str = "auto"):
    """Model from `checkpoint` on `device` (default cuda if available) in eval mode; tokenizer from
    `tokenizer`, else the checkpoint dir, else its parent (a Trainer output dir above checkpoint-N/)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype: expected auto, float32, bfloat16 or float16, got {dtype!r}")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).to(device).eval()
    candidates = [tokenizer] if tokenizer else [checkpoint] + ([str(Path(checkpoint).parent)] if Path(checkpoint).is_dir() else [])
    errors = []
    for c in candidates:
        try:
            return model, AutoTokenizer.from_pretrained(c), dtype, device
        except (OSError, ValueError) as e:
            errors.append(f"{c}: {type(e).__name__}: {e}")
    raise ValueError("no tokenizer found (pass --tokenizer): " + " | ".join(errors))


def evaluate(
    checkpoint: str,
    data: str,
    text_field: str = "text",
    block_size: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 8,
    tokenizer: str | None = None,
    split: str = "validation",
    txt_docs: str = "paragraph",
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = True,
) -> dict:
    model, tok, dtype, device = load_model_and_tokenizer(checkpoint, tokenizer, device, dtype)
    stream, n_bytes, n_docs = build_stream(iter_documents(data, text_field, split, txt_docs), tok, max_tokens)
    if len(stream) < 2 or n_bytes == 0:
        raise ValueError(f"--data: {data!r} has no text to score")
    total, count = score_stream(model, stream, block_size, batch_size, progress)
    loss = total / count
    return {
        "checkpoint": str(checkpoint),
        "data": data,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": total / math.log(2) / n_bytes,
        "nll_total_nats": total,
        "tokens": count,
        "bytes": n_bytes,
        "documents": n_docs,
        "block_size": block_size,
        "max_tokens": max_tokens,
        "num_layers": getattr(model.config, "num_hidden_layers", None),
        "dtype": dtype,
        "device": device,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="saved HF model directory (or hub name)")
    p.add_argument("--data", required=True, help="local .txt/.jsonl/.parquet file or hf:NAME[:CONFIG]")
    p.add_argument("--text_field", default="text", help="text field/column of .jsonl/.parquet/hub rows")
    p.add_argument("--split", default="validation", help="hub split (hf: data only)")
    p.add_argument("--txt_docs", default="paragraph", choices=["paragraph", "file"], help="a .txt file's documents: blank-line separated paragraphs, or the whole file")
    p.add_argument("--block_size", type=int, default=512, help="context length of each scored window")
    p.add_argument("--max_tokens", type=int, default=None, help="cap on the token stream (default: all the data)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint dir, then its parent)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU that supports it, else float32), float32, bfloat16, float16")
    p.add_argument("--out", default=None, help="also write the result to this JSON file")
    args = p.parse_args(argv)
    try:
        result = evaluate(
            args.checkpoint, args.data, args.text_field, args.block_size, args.max_tokens, args.batch_size,
            args.tokenizer, args.split, args.txt_docs, args.device, args.dtype,
        )
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    return result


if __name__ == "__main__":
    main()
