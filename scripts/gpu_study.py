"""The compute study, short, on one GPU: fixed depths 3 / 6 / 12 vs growth 3 -> 6 -> 12 (WSD, early and
late) at three equal-FLOPs budgets, a 125M-class llama, offline data; MFU printed per run.

    python scripts/gpu_study.py --out runs/gpu_study_short                  # one H200, ~8 minutes
    python scripts/gpu_study.py --smoke --out /tmp/gpu_study_smoke          # CPU, tiny sizes, seconds

It is eval/study.py's pipeline (same budget matching, selection, frontier, report) with a GPU recipe
(recipes/study_gpu_short.yaml) and a short protocol that fits the time: one LR (--lr) and one seed
per run, so it shows the shape of the frontier and the throughput, not significance; the full
protocol (LR sweep, 3 seeds) is `eval/study.py --preset gpu_125m`. Runs train in this process, one
after the other. MFU = training FLOPs counted by growth.flops (depth-aware) / train runtime /
--peak_tflops (H200 / H100 SXM dense bf16: 989). Writes OUT/study.{json,md}, OUT/frontier.png and
OUT/mfu.json (benchmark format).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from eval.study import StudyConfig, Study

SHORT = StudyConfig(
    recipe="recipes/study_gpu_short.yaml", ref_steps=500, ref_arm="wsd_early_3-6-12", initial_depth=3,
    fixed_depths=(3, 6, 12), growth=(("wsd_early_3-6-12", ((0.25, 6), (0.5, 12))), ("wsd_late_3-6-12", ((0.6, 6), (0.8, 12)))),
    inits=(), lrs=(1e-3,), max_extend=0, seeds=1)

SMOKE = replace(
    SHORT, ref_steps=16, budgets=(0.5, 1.0), fixed_depths=(3,), growth=(("wsd_early_3-6", ((0.5, 6),)),),
    ref_arm="wsd_early_3-6",
    extra=["--model.hidden_size", "16", "--model.num_heads", "2", "--data.block_size", "16",
           "--model.max_position_embeddings", "16", "--tokenizer.vocab_size", "300", "--data.max_train_bytes", "200000",
           "--data.max_eval_tokens", "256", "--per_device_train_batch_size", "4", "--bf16", "false",
           "--optim", "adamw_torch", "--dataloader_num_workers", "0"])


def mfu_rows(study: Study, peak_tflops: float) -> list[dict]:
    rows = []
    for name, info in sorted(study.results.items()):
        metrics = [json.loads(l) for l in (study.out / "runs" / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
        flops = max((r["flops"] for r in metrics if "flops" in r), default=0.0)
        runtime = info.get("train_runtime_s") or float("nan")
        rows.append({"run": name, "flops": flops, "train_runtime_s": runtime,
                     "tflops_per_s": flops / runtime / 1e12, "mfu": flops / runtime / (peak_tflops * 1e12)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="study directory (default runs/gpu_study_short; with --smoke a temp dir)")
    p.add_argument("--lr", type=float, default=None, help="the one learning rate (default 1e-3)")
    p.add_argument("--ref_steps", type=int, default=None, help="steps of the reference growth run (budget 1; default 500)")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="the accelerator's dense bf16 peak, for MFU")
    p.add_argument("--json", default=None, help="write the MFU numbers in the benchmark format here")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, fp32: the whole pipeline in seconds")
    a = p.parse_args(argv)
    cfg = SMOKE if a.smoke else SHORT
    if a.lr is not None:
        cfg = replace(cfg, lrs=(a.lr,))
    if a.ref_steps is not None:
        cfg = replace(cfg, ref_steps=a.ref_steps)
    if a.smoke and a.out is None:
        import tempfile

        a.out = tempfile.mkdtemp(prefix="gpu_study_smoke_")
    out = Path(a.out or "runs/gpu_study_short").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not a.smoke:
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: no CUDA device (use --smoke on CPU)")
    start = time.time()
    study = Study(out, cfg)
    study.prepare()
    study.run(jobs=1)
    rows = mfu_rows(study, a.peak_tflops)
    print(f"{'run':<36} {'FLOPs':>10} {'train s':>8} {'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        print(f"{r['run']:<36} {r['flops']:>10.3g} {r['train_runtime_s']:>8.1f} {r['tflops_per_s']:>8.1f} {r['mfu']:>6.1%}")
    total_flops, total_s = sum(r["flops"] for r in rows), sum(r["train_runtime_s"] for r in rows)
    mfu = total_flops / total_s / (a.peak_tflops * 1e12) if total_s else float("nan")
    print(f"all runs: {total_flops:.3g} FLOPs in {total_s:.0f} s of training: MFU {mfu:.1%} of {a.peak_tflops:g} TFLOP/s; "
          f"wall {time.time() - start:.0f} s; report {out / 'study.md'}")
    result = {"name": "gpu_study", "command": " ".join(sys.argv),
              "results": [{"metric": "mfu_all_runs", "value": mfu, "target": None, "status": "INFO", "noise": None,
                           "note": f"{len(rows)} runs, peak {a.peak_tflops:g} TFLOP/s{' (smoke: CPU)' if a.smoke else ''}"}]}
    (out / "mfu.json").write_text(json.dumps({"runs": rows, **result}, indent=2) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    if study.failed:
        print(f"error: {len(study.failed)} run(s) failed: {', '.join(study.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
