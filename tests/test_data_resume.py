"""Exact resume through scripts/train.py: after a checkpoint saved past a growth event, the resumed
run trains on the very batches (token ids) the uninterrupted run trained on, on the prepared and
the streaming path (2 dataloader workers), on 1 and 2 ranks (DDP, gloo). The corpus is FineWeb-Edu
shaped: parquet shards with a `text` column."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow]


def _corpus(path: Path) -> None:
    path.mkdir()
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:48]
    texts = [f.read_text(errors="replace")[:6000] for f in files]
    for i in range(8):
        pd.DataFrame({"text": texts[i::8], "url": [f"doc{j}" for j in range(i, 48, 8)]}).to_parquet(path / f"{i:05d}.parquet")


VARIANTS = {"prepared": [], "streaming": ["--data.streaming", "true", "--dataloader_num_workers", "2"]}
# Gradient accumulation (the GPU recipes use 4-8): the stream skips micro-batches, not steps.
ACCUM = {"streaming_accum": ["--data.streaming", "true", "--dataloader_num_workers", "2",
                             "--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "2"]}


def _runs(tmp: Path, variants: dict) -> list[str]:
    common = ["--config", "recipes/tiny.yaml", "--max_steps", "6", "--model.hidden_size", "32",
              "--model.max_position_embeddings", "64", "--data.block_size", "64",
              "--data.source", str(tmp / "corpus" / "*.parquet"), "--data.validation_fraction", "0",
              "--data.cache_dir", str(tmp / "cache"), "--data.num_proc", "1", "--tokenizer.vocab_size", "300",
              "--growth.schedule", "{initial_depth: 2, unit: steps, points: [[2, 4]]}", "--save_steps", "3",
              "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--logging_steps", "1",
              "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true"]
    argv = []
    for path, extra in variants.items():
        out = tmp / path
        argv += [str(out / "full"), "0", *common, *extra, "--output_dir", str(out / "full"), "::",
                 str(out / "part"), "3", *common, *extra, "--output_dir", str(out / "run"), "::",
                 str(out / "resumed"), "0", *common, *extra, "--output_dir", str(out / "run"),
                 "--resume_from_checkpoint", str(out / "run" / "checkpoint-3"), "::"]
    return argv[:-1]


def _check(tmp: Path, ranks: int, variants: dict) -> None:
    for path in variants:
        for rank in range(ranks):
            full, part, resumed = (json.loads((tmp / path / f"{name}.rank{rank}.json").read_text())
                                   for name in ("full", "part", "resumed"))
            assert sorted(part["steps"], key=int) == ["1", "2", "3"] and sorted(resumed["steps"], key=int) == ["4", "5", "6"]
            for step in ("1", "2", "3"):
                assert part["steps"][step] == full["steps"][step], (path, rank, step)
            for step in ("4", "5", "6"):  # the very next batches, token for token
                assert resumed["steps"][step] == full["steps"][step], (path, rank, step)
        config = json.loads((tmp / path / "run" / "checkpoint-3" / "config.json").read_text())
        assert config["num_hidden_layers"] == 4  # the checkpoint was saved after the growth event
        if ranks == 2:  # each rank trains on its own share
            r0, r1 = (json.loads((tmp / path / f"full.rank{r}.json").read_text())["steps"] for r in range(2))
            rows0 = {tuple(row) for batch in r0.values() for b in batch for row in b}
            rows1 = {tuple(row) for batch in r1.values() for b in batch for row in b}
            assert rows0 and not rows0 & rows1


def _launch(tmp: Path, ranks: int, variants: dict):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    worker = str(ROOT / "tests" / "data_worker.py")
    if ranks == 1:
        cmd = [sys.executable, worker]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/ddp.yaml",
               "--num_processes", "2", "--main_process_port", str(29700 + os.getpid() % 200), worker]
    proc = subprocess.run([*cmd, *_runs(tmp, variants)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_resume_gives_the_next_batches_one_rank(tmp_path):
    _corpus(tmp_path / "corpus")
    variants = {**VARIANTS, **ACCUM}
    log = _launch(tmp_path, 1, variants)
    assert "data: streaming 8 pieces" in log
    _check(tmp_path, 1, variants)
    accum = json.loads((tmp_path / "streaming_accum" / "full.rank0.json").read_text())["steps"]
    assert all(len(batches) == 2 for batches in accum.values())  # two micro-batches per optimizer step


@pytest.mark.distributed
def test_resume_gives_the_next_batches_two_ranks(tmp_path):
    _corpus(tmp_path / "corpus")
    _launch(tmp_path, 2, VARIANTS)
    _check(tmp_path, 2, VARIANTS)
