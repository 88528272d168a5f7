"""Prepare a recipe's tokenizer and packed data offline, so a training job starts on the cache at once.

    python scripts/prepare_data.py --config recipes/gpt_125m.yaml --data.streaming false
    python scripts/prepare_data.py --config recipes/tiny.yaml --data.num_proc 2
    python scripts/prepare_data.py --smoke          # a generated corpus in a temp dir, a few seconds

Takes the same recipe and overrides as scripts/train.py and fills the same cache
(`data.cache_dir`): training with that recipe then loads the memory-mapped blocks instead of
preparing them. Shows a progress bar (bytes or pieces, tokens, tokens/s, ETA). With
`data.streaming: true` only the validation slice is prepared (the training stream has nothing to
prepare). Prints one line per split, then the cache entry's path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # our processes are the parallelism


def prepare(recipe, progress: bool = True) -> dict:
    from growth.data import PackedBlocks, StreamingBlocks, build_datasets, build_tokenizer, load_documents

    start = time.time()
    texts = load_documents(recipe.data)[0] if recipe.tokenizer.train_bpe else None
    tokenizer = build_tokenizer(recipe.tokenizer, texts, recipe.data.cache_dir)
    train, validation = build_datasets(recipe.data, tokenizer, progress=progress)
    out = {"seconds": round(time.time() - start, 2), "vocab": len(tokenizer)}
    for split, ds in (("train", train), ("validation", validation)):
        if isinstance(ds, PackedBlocks):
            out[split] = {"blocks": len(ds), "tokens": len(ds) * recipe.data.block_size, "path": str(ds.path)}
        elif isinstance(ds, StreamingBlocks):
            out[split] = {"streaming": True, "pieces": len(ds.pieces)}
    return out


def smoke() -> int:
    from growth.recipe import load_recipe

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        text = (Path(json.__file__)).read_text()  # real text from the stdlib, no download
        for i in range(4):
            rows = [json.dumps({"text": f"# part {i}.{j}\n{text[j * 997 % len(text):][:3000]}"}) for j in range(40)]
            (corpus / f"part-{i}.jsonl").write_text("\n".join(rows) + "\n")
        overrides = {"data.source": str(corpus / "*.jsonl"), "data.cache_dir": str(Path(tmp) / "cache"),
                     "data.max_eval_tokens": 1024, "data.num_proc": 2, "tokenizer.vocab_size": 300,
                     "data.max_train_bytes": None}
        recipe = load_recipe(root / "recipes" / "tiny.yaml", overrides)
        first = prepare(recipe, progress=False)
        again = prepare(recipe, progress=False)  # loads the cache entry
        ok = first["train"]["blocks"] > 0 and first["train"] == again["train"] and again["seconds"] < first["seconds"] + 5
        print(json.dumps(first))
        print("smoke:", "ok" if ok else "FAILED")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--smoke" in argv:
        return smoke()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from growth.run import parse_args

    try:
        recipe, _ = parse_args(argv)
        result = prepare(recipe)
    except ValueError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for split in ("train", "validation"):
        if split in result:
            print(f"{split}: {json.dumps(result[split])}")
    print(f"prepared in {result['seconds']} s (vocab {result['vocab']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
