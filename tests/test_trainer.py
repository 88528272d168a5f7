"""Growth inside one HF Trainer run, on one process: continuation, new layers training, resume."""

import json
import os

import datasets
import pytest
import torch
import transformers

import growth
from growth.flops import training_flops_per_token
from growth.trainer import enable_growth

from conftest import tiny_model

SCHEDULE = {"initial_depth": 2, "unit": "fraction", "points": [[0.3, 3], [0.6, 4]]}


def _data():
    # A learnable stream (each row counts up from a random start) so losses move visibly.
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(2, 60, (64, 1), generator=g)
    ids = (starts + torch.arange(16)) % 95 + 2
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def _trainer(out, growth_cfg=SCHEDULE, max_steps=10, trainer_cls=transformers.Trainer, **kw):
    kw = {"save_strategy": "no", **kw}
    args = transformers.TrainingArguments(
        out, max_steps=max_steps, per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, lr_scheduler_type="linear", warmup_steps=2, **kw)
    ds = _data()
    trainer = trainer_cls(model=tiny_model("llama", layers=2).train(), args=args, train_dataset=ds, eval_dataset=ds.select(range(8)))
    return enable_growth(trainer, {"schedule": growth_cfg}) if growth_cfg else trainer


def _history(trainer, key="loss"):
    return {h["step"]: h[key] for h in trainer.state.log_history if key in h}


def test_growth_inside_one_run(tmp_path):
    trainer = _trainer(tmp_path / "g", eval_strategy="steps", eval_steps=5)
    snapshots = {}

    class Snap(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in (3, 6):  # right after growth (GrowthCallback runs first)
                snapshots[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer.add_callback(Snap())
    trainer.train()
    assert growth.current_depth(trainer.model) == 4 and trainer.model.config.num_hidden_layers == 4
    assert [l.self_attn.layer_idx for l in trainer.model.model.layers] == [0, 1, 2, 3]
    # new layers receive gradients and change
    final = dict(trainer.model.named_parameters())
    for step, layer in ((3, 2), (6, 3)):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        assert not torch.equal(snapshots[step][name], final[name]), name
    # every parameter is in the optimizer, and the LR schedule is the one of a run without growth
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in trainer.model.parameters())
    base = _trainer(tmp_path / "b", growth_cfg=None)
    base.train()
    assert _history(trainer, "learning_rate") == _history(base, "learning_rate")
    losses = _history(trainer)
    assert len(losses) == 10 and all(map(torch.isfinite, torch.tensor(list(losses.values()))))
    assert losses[10] < losses[1]
    assert len(_history(trainer, "eval_loss")) == 2  # evaluation continued after growth

    metrics = [json.loads(l) for l in open(tmp_path / "g" / "metrics.jsonl")]
    events = [json.loads(l) for l in open(tmp_path / "g" / "growth_events.jsonl")]
    assert [(e["step"], e["from_depth"], e["to_depth"], e["mapping"]) for e in events] == [(3, 2, 3, [0, 1, 1]), (6, 3, 4, [0, 1, 2, 2])]
    fpt = lambda d: training_flops_per_token(trainer.model.config, 16, d)  # noqa: E731
    for m in metrics:
        if "loss" in m:
            s = m["step"]
            expect = sum(4 * 16 * fpt(2 if t < 3 else 3 if t < 6 else 4) for t in range(s))
            assert m["flops"] == pytest.approx(expect, rel=1e-12) and m["tokens"] == 64 * s
            assert m["depth"] == (2 if s < 3 else 3 if s < 6 else 4)


def test_works_with_a_trainer_subclass(tmp_path):
    class MyTrainer(transformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.calls = getattr(self, "calls", 0) + 1
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = _trainer(tmp_path, trainer_cls=MyTrainer)
    assert isinstance(trainer, MyTrainer) and type(trainer).__name__ == "GrowingMyTrainer"
    trainer.train()
    assert trainer.calls == 10 and growth.current_depth(trainer.model) == 4


def test_resume_after_growth_matches_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full")
    full.train()
    part = _trainer(tmp_path / "part", save_strategy="steps", save_steps=4)
    part.train()
    ckpt = tmp_path / "part" / "checkpoint-4"
    assert json.load(open(ckpt / "config.json"))["num_hidden_layers"] == 3
    resumed = _trainer(tmp_path / "part")  # a fresh 2-layer model, as a restarted script builds it
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert growth.current_depth(resumed.model) == 4
    a, b = _history(full), _history(resumed)
    assert sorted(b) == list(range(1, 11))  # 1-4 restored from the checkpoint's state, 5-10 trained after resume
    for step in b:
        assert abs(a[step] - b[step]) / abs(a[step]) < 1e-5, (step, a[step], b[step])
    # the run log reads as one run: no duplicated steps
    steps = [json.loads(l)["step"] for l in open(tmp_path / "part" / "metrics.jsonl") if "loss" in l]
    assert steps == list(range(1, 11))


def test_bad_setup_raises_before_training(tmp_path):
    with pytest.raises(ValueError, match="growth.schedule.initial_depth is 3 but the model has 2 layers"):
        _trainer(tmp_path, growth_cfg={**SCHEDULE, "initial_depth": 3, "points": [[0.5, 4]]})
    with pytest.raises(ValueError, match=r"growth.schedule.points\[1\]"):
        _trainer(tmp_path, growth_cfg={**SCHEDULE, "points": [[0.3, 3], [0.6, 3]]})


def test_lr_rewarmup_after_growth(tmp_path):
    """rewarmup_steps=2: the two steps after each growth run at 1/3 and 2/3 of the schedule's LR."""

    def applied_lrs(trainer):
        lrs = {}

        class Record(transformers.TrainerCallback):
            def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
                lrs[state.global_step] = optimizer.param_groups[0]["lr"]  # step about to be taken: global_step + 1

        trainer.add_callback(Record())
        trainer.train()
        return lrs

    plain = applied_lrs(_trainer(tmp_path / "a"))
    trainer = _trainer(tmp_path / "b")
    trainer.growth_config.rewarmup_steps = 2
    warm = applied_lrs(trainer)
    for step in plain:  # growth after steps 3 and 6: optimizer steps 3, 4 and 6, 7 (0-based) ramp
        factor = {3: 1 / 3, 4: 2 / 3, 6: 1 / 3, 7: 2 / 3}.get(step, 1.0)
        assert warm[step] == pytest.approx(plain[step] * factor, rel=1e-12), step
