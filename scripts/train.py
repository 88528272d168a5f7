"""Train a recipe with gradual depth growth (one HF Trainer run; growth happens inside it).

    python scripts/train.py --config recipes/tiny.yaml                       # the default tiny run, CPU
    python scripts/train.py --config recipes/tiny.yaml --max_steps 60 --output_dir runs/short
    python scripts/train.py --config recipes/tiny.yaml --growth.init zero --model.hidden_size 64 --seed 1
    python scripts/train.py --config recipes/tiny_baseline.yaml               # full depth from step 0
    python scripts/train.py --config recipes/tiny.yaml --output_dir runs/tiny --resume_from_checkpoint true
    accelerate launch --num_processes 2 scripts/train.py --config recipes/gpt_125m.yaml
    python scripts/train.py --help                                            # every field, with help

Any recipe field (dotted: --model.hidden_size, --growth.schedule.points) or TrainingArguments field
(--max_steps, --learning_rate, also as --training.NAME) overrides the recipe. A non-empty
output_dir is refused unless --resume_from_checkpoint or --overwrite_output_dir true is given.
Writes recipe.yaml, run.json, metrics.jsonl, growth_events.jsonl, checkpoints and the final model
and tokenizer into output_dir; see growth/run.py.
"""

import sys

from growth.run import main

if __name__ == "__main__":
    sys.exit(main())
