"""scripts/train.py (growth.run.main) with a recorder of every batch it trains on, for the data tests:

    [accelerate launch ...] tests/data_worker.py OUT_PREFIX STOP_AT TRAIN_ARGS... [:: OUT_PREFIX STOP_AT TRAIN_ARGS...]

Each run (several, one after the other in this process, separated by "::", so a test pays the
launch once) writes OUT_PREFIX.rank{R}.json: {"steps": {global step: the batches' input_ids},
"exit": code}. STOP_AT > 0 stops the run after that optimizer step (its checkpoint is saved first,
as a preempted run's would be). Nothing else is changed: the real recipe, data, Trainer and growth.
"""

import json
import os
import sys

import transformers

import growth.trainer
from growth.run import main

original = growth.trainer.enable_growth
steps: dict[int, list] = {}
stop_at = 0


class StopAt(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == stop_at:
            control.should_save = True
            control.should_training_stop = True


def recording_enable_growth(trainer, *args, **kwargs):
    trainer = original(trainer, *args, **kwargs)
    step = trainer.training_step  # the growing trainer's own (bound) method

    def training_step(model, inputs, num_items_in_batch=None):
        # global_step counts finished optimizer steps: this batch belongs to step global_step + 1
        steps.setdefault(trainer.state.global_step + 1, []).append(inputs["input_ids"].tolist())
        return step(model, inputs, num_items_in_batch)

    trainer.training_step = training_step
    if stop_at:
        trainer.add_callback(StopAt())
    return trainer


growth.trainer.enable_growth = recording_enable_growth
runs, run = [], []
for token in sys.argv[1:]:
    if token == "::":
        runs.append(run)
        run = []
    else:
        run.append(token)
runs.append(run)
rank = int(os.environ.get("RANK", 0))
for out, stop, *argv in runs:
    steps.clear()
    stop_at = int(stop)
    code = main(argv)
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"steps": steps, "exit": code}, f)
