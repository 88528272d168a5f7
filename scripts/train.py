"""Train a recipe with gradual depth growth (one HF Trainer run; growth happens inside it).

    python scripts/train.py --config recipes/tiny.yaml                       # the default tiny run, CPU
    python scripts/train.py --config recipes/tiny.yaml --max_steps 60 --output_dir runs/short
    python scripts/train.py --config recipes/tiny.yaml --growth.init zero --model.hidden_size 64 --seed 1
    python scripts/train.py --config recipes/tiny_baseline.yaml               # full depth from step 0
    python scripts/train.py --config recipes/tiny.yaml --output_dir runs/tiny --resume_from_checkpoint true
    accelerate launch --num_processes 2 scripts/train.py --config recipes/gpt_125m.yaml
    python scripts/train.py --help                                            # every field, with help
    python scripts/train.py --smoke                                           # seconds: tiny run into a temp dir

Any recipe field (dotted: --model.hidden_size, --growth.schedule.points) or TrainingArguments field
(--max_steps, --learning_rate, also as --training.NAME) overrides the recipe. A non-empty
output_dir is refused unless --resume_from_checkpoint or --overwrite_output_dir true is given.
Writes recipe.yaml, run.json, metrics.jsonl, growth_events.jsonl, checkpoints and the final model
and tokenizer into output_dir; see growth/run.py.

--smoke trains recipes/tiny.yaml shrunk to seconds (width 32, 8 steps, growth 2 -> 4 -> 6 at
steps 2 and 4, a 512-token BPE on 200 kB of text) into a temporary directory, and fails unless
the run ends at depth 6 with two growth events and a final eval loss. Further overrides may follow.
"""

import json
import math
import os
import sys
import tempfile

from growth.run import main

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "tiny.yaml")
SMOKE = ["--max_steps", "8", "--model.hidden_size", "32", "--data.block_size", "32", "--model.max_position_embeddings", "32",
         "--data.max_train_bytes", "200000", "--data.max_eval_tokens", "512", "--tokenizer.vocab_size", "512",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--eval_steps", "4", "--save_strategy", "no",
         "--disable_tqdm", "true", "--report_to", "none"]


def smoke(extra: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="train_smoke_") as tmp:
        out = os.path.join(tmp, "run")
        rc = main(["--config", RECIPE, *SMOKE, "--data.cache_dir", os.path.join(tmp, "cache"), "--output_dir", out, *extra])
        if rc:
            return rc
        with open(os.path.join(out, "run.json")) as f:
            info = json.load(f)
        with open(os.path.join(out, "growth_events.jsonl")) as f:
            events = [json.loads(line) for line in f if line.strip()]
        depths = [(e["from_depth"], e["to_depth"]) for e in events]
        loss = info.get("final_eval_loss")
        if info.get("final_depth") != 6 or depths != [(2, 4), (4, 6)] or loss is None or not math.isfinite(loss):
            print(f"smoke: FAILED: final depth {info.get('final_depth')}, growth events {depths}, final eval loss {loss}",
                  file=sys.stderr)
            return 1
        print(f"smoke: OK: depth 2 -> 4 -> 6, {info['global_step']} steps, final eval loss {loss:.3f}")
        return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--smoke" in argv:
        argv.remove("--smoke")
        sys.exit(smoke(argv))
    sys.exit(main())
