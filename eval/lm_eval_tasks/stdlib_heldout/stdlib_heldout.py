"""Documents of the lm-eval task `stdlib_heldout` (see stdlib_heldout.yaml).

`stdlib_heldout.jsonl` (shipped, 34 KB) holds the 22 Python 3.11 standard-library files of at least
600 characters that growth/data.py holds out of training (`in_validation(path, 0.05)`: the first 5% of the sha1 range of the path, so they
stay held out for any validation_fraction >= 0.05), sorted by path, each cut to at most 1,500
characters at a line end: {"path", "text"}. Shipped rather than read from the running Python, so
the metric is the same text on every machine. It was written by `generate()`:

    .venv/bin/python -c "import runpy; runpy.run_path('eval/lm_eval_tasks/stdlib_heldout/stdlib_heldout.py')['generate']()"
"""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent
DATA = HERE / "stdlib_heldout.jsonl"


def load(**kwargs) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset`: the shipped documents as the test split (in memory: 34 KB, and
    nothing is written to the datasets cache)."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def generate(n_docs: int | None = None, max_chars: int = 1500, min_chars: int = 600, fraction: float = 0.05) -> None:
    import sys

    sys.path.insert(0, str(HERE.parents[2]))
    from growth.data import in_validation, stdlib_documents

    rows = []
    for path, text in stdlib_documents():
        if not in_validation(path, fraction) or len(text) < min_chars:
            continue
        cut = text[:max_chars]
        cut = cut[: cut.rfind("\n")] if len(text) > max_chars else cut
        rows.append({"path": path, "text": cut.rstrip()})
        if len(rows) == n_docs:
            break
    DATA.write_text("".join(json.dumps(r) + "\n" for r in rows))
