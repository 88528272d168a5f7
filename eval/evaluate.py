"""Validation loss, perplexity and bits per byte of a saved HF causal-LM checkpoint.

    python -m eval.evaluate out/run/checkpoint-1000 --data data/val.txt
    python -m eval.evaluate out/run --data data/val.jsonl --text_field text --block_size 512 --max_tokens 1000000 --out val.json
    python -m eval.evaluate out/run --data hf:wikitext:wikitext-103-raw-v1 --split validation --max_tokens 2000000
    python eval/evaluate.py out/run --data data/val.parquet --tokenizer out/tokenizer --device cpu
    python eval/evaluate.py runs/tiny --lm-eval stdlib_heldout            # lm-evaluation-harness, shipped local task
    python eval/evaluate.py runs/tiny --lm-eval hellaswag,arc_easy,lambada_openai --batch_size 32   # hub tasks (GPU, network)
    python eval/evaluate.py --smoke                                       # a tiny grown checkpoint, both paths (seconds)

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

--lm-eval TASKS (comma-separated) runs EleutherAI's lm-evaluation-harness (`lm_eval.simple_evaluate`
with its HF model class, `HFLM`, on the local checkpoint, at the depth the checkpoint was saved
with) and adds {"lm_eval": {task: {metric: value}}} to the JSON line. Tasks in eval/lm_eval_tasks/
need no network: `stdlib_heldout` scores held-out standard-library text with the rolling
log-likelihood (bits_per_byte, byte_perplexity, word_perplexity). Other names are the harness's own
tasks (hellaswag, arc_easy, arc_challenge, lambada_openai, ...), downloaded from the HF hub.
--lm_eval_limit N scores only the first N documents of each task (a check, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


# Local file type -> the `datasets` builder that reads it.
LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def iter_documents(data: str, text_field: str = "text", split: str = "validation", txt_docs: str = "paragraph") -> Iterator[str]:
    """Texts of `data` (see the module docstring), lazily, read by `datasets` in streaming mode.

    A .txt file's documents are separated by blank lines ("\n\n", surrounding newlines stripped),
    as growth/data.py splits training text; with txt_docs="file" the whole file is one document."""
    import datasets

    if txt_docs not in ("paragraph", "file"):
        raise ValueError(f"--txt_docs: expected 'paragraph' or 'file', got {txt_docs!r}")
    if data.startswith(HUB_PREFIX):
        name, _, config = data[len(HUB_PREFIX) :].partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
        except Exception as e:  # offline, not found, bad config or split: each a different type
            raise ValueError(
                f"--data: could not load hub dataset {name!r} (config={config or None!r}, split={split!r}): "
                f"{type(e).__name__}: {e}. Offline? Pass a local .txt/.jsonl/.parquet file instead."
            ) from e
        field, strip = text_field, False
    else:
        path = Path(data)
        if not path.is_file():
            raise ValueError(f"--data: file {data!r} does not exist (for a hub dataset use hf:NAME)")
        builder = LOCAL_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"--data: unsupported file type {path.suffix!r} for {data!r} (expected .txt, .jsonl, .parquet or hf:NAME)")
        kwargs = {"sample_by": "document" if txt_docs == "file" else "paragraph"} if builder == "text" else {}
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **kwargs)
        field, strip = ("text", txt_docs == "paragraph") if builder == "text" else (text_field, False)
    for i, row in enumerate(ds):
        if field not in row:
            raise ValueError(f"--text_field: {data} row {i} has no field {field!r} (fields: {sorted(row)})")
        text = row[field]
        if strip and text:
            text = text.strip("\n")
        if text:
            yield text


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


def resolve_device_dtype(device: str | None, dtype: str) -> tuple[str, str]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype: expected auto, float32, bfloat16 or float16, got {dtype!r}")
    return device, dtype


def find_tokenizer(checkpoint: str, tokenizer: str | None = None):
    """(tokenizer, where): from `tokenizer`, else the checkpoint dir, else its parent (a Trainer
    output dir above checkpoint-N/)."""
    from transformers import AutoTokenizer

    candidates = [tokenizer] if tokenizer else [checkpoint] + ([str(Path(checkpoint).parent)] if Path(checkpoint).is_dir() else [])
    errors = []
    for c in candidates:
        try:
            return AutoTokenizer.from_pretrained(c), c
        except (OSError, ValueError) as e:
            errors.append(f"{c}: {type(e).__name__}: {e}")
    raise ValueError("no tokenizer found (pass --tokenizer): " + " | ".join(errors))


def load_model_and_tokenizer(checkpoint: str, tokenizer: str | None = None, device: str | None = None, dtype: str = "auto"):
    """Model from `checkpoint` on `device` (default cuda if available) in eval mode, and its tokenizer
    (see find_tokenizer)."""
    from transformers import AutoModelForCausalLM

    device, dtype = resolve_device_dtype(device, dtype)
    tok, _ = find_tokenizer(checkpoint, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).to(device).eval()
    return model, tok, dtype, device


LM_EVAL_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"  # local tasks: no network needed


def run_lm_eval(checkpoint: str, tasks: str | list[str], tokenizer: str | None = None, device: str | None = None,
                dtype: str = "auto", batch_size: int = 8, limit: int | None = None, num_fewshot: int | None = None) -> dict:
    """lm-evaluation-harness on a local checkpoint: {"num_layers", "lm_eval": {task: {metric: value}},
    "lm_eval_version"}. Tasks are eval/lm_eval_tasks/'s or the harness's own (see the module docstring)."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ValueError(f"--lm-eval: expected comma-separated task names, got {tasks!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"--lm_eval_limit: must be positive, got {limit}")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device, dtype = resolve_device_dtype(device, dtype)
    _, tok_path = find_tokenizer(checkpoint, tokenizer)
    # Indexing the harness's ~200 task folders takes seconds: only when a task is not ours.
    manager = TaskManager(include_path=str(LM_EVAL_TASKS), include_defaults=False)
    if not set(names) <= set(manager.all_tasks):
        manager = TaskManager(include_path=str(LM_EVAL_TASKS))
        unknown = sorted(set(names) - set(manager.all_tasks))
        if unknown:
            raise ValueError(f"--lm-eval: unknown task(s) {unknown} (local tasks: {sorted(os.listdir(LM_EVAL_TASKS))}; "
                             "see `lm_eval ls tasks` for the harness's)")
    lm = HFLM(pretrained=checkpoint, tokenizer=tok_path, device=device, dtype=dtype, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                                  log_samples=False, bootstrap_iters=0)
    metrics = {}
    for task, values in out["results"].items():
        # Keys are "metric,filter" ("bits_per_byte,none"); stderr is "N/A" without bootstrapping.
        metrics[task] = {k.split(",")[0]: v for k, v in values.items()
                         if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    return {"checkpoint": str(checkpoint), "num_layers": lm.model.config.num_hidden_layers, "lm_eval": metrics,
            "lm_eval_limit": limit, "lm_eval_version": out.get("lm_eval_version"), "dtype": dtype, "device": device}


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


def write_smoke_checkpoint(root: Path) -> tuple[Path, Path]:
    """(checkpoint, text file) for --smoke: a tiny Llama grown 2 -> 4 layers by growth.grow, saved
    with a byte-level BPE tokenizer trained on a little standard-library text."""
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from growth import grow
    from growth.models import ModelConfig, build_model

    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = ModelConfig(family="llama", hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=2048)
    model = build_model(cfg, len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    grow(model, 4)
    ckpt = root / "grown"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    (root / "val.txt").write_text(text[:4000], encoding="utf-8")
    return ckpt, root / "val.txt"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="saved HF model directory (or hub name)")
    p.add_argument("--data", default=None, help="local .txt/.jsonl/.parquet file or hf:NAME[:CONFIG] (needed unless --lm-eval)")
    p.add_argument("--text_field", default="text", help="text field/column of .jsonl/.parquet/hub rows")
    p.add_argument("--split", default="validation", help="hub split (hf: data only)")
    p.add_argument("--txt_docs", default="paragraph", choices=["paragraph", "file"], help="a .txt file's documents: blank-line separated paragraphs, or the whole file")
    p.add_argument("--block_size", type=int, default=512, help="context length of each scored window")
    p.add_argument("--max_tokens", type=int, default=None, help="cap on the token stream (default: all the data)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the checkpoint dir, then its parent)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU that supports it, else float32), float32, bfloat16, float16")
    p.add_argument("--lm-eval", "--lm_eval", dest="lm_eval", default=None, metavar="TASKS",
                   help="comma-separated lm-evaluation-harness tasks (stdlib_heldout is local; others come from the hub)")
    p.add_argument("--lm_eval_limit", type=int, default=None, help="score only the first N documents of each task")
    p.add_argument("--num_fewshot", type=int, default=None, help="lm-eval few-shot examples (default: each task's)")
    p.add_argument("--out", default=None, help="also write the result to this JSON file")
    p.add_argument("--smoke", action="store_true", help="grow a tiny model, save it, score it both ways (seconds)")
    args = p.parse_args(argv)
    tmp = None
    if args.smoke:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="evaluate_smoke_")
        ckpt, data = write_smoke_checkpoint(Path(tmp.name))
        args.checkpoint, args.data, args.lm_eval = str(ckpt), str(data), args.lm_eval or "stdlib_heldout"
        args.lm_eval_limit, args.block_size, args.device = args.lm_eval_limit or 2, 128, "cpu"
    if args.checkpoint is None:
        p.error("the checkpoint is required (or --smoke)")
    if args.data is None and args.lm_eval is None:
        p.error("give --data, --lm-eval TASKS, or both")
    try:
        result = {}
        if args.data is not None:
            result = evaluate(
                args.checkpoint, args.data, args.text_field, args.block_size, args.max_tokens, args.batch_size,
                args.tokenizer, args.split, args.txt_docs, args.device, args.dtype,
            )
        if args.lm_eval is not None:
            result.update(run_lm_eval(args.checkpoint, args.lm_eval, args.tokenizer, args.device, args.dtype,
                                      args.batch_size, args.lm_eval_limit, args.num_fewshot))
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    finally:
        if tmp is not None:
            tmp.cleanup()
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    return result


if __name__ == "__main__":
    main()
