"""growth/reporting.py on a real growing Trainer run: what it hands to wandb's public Run API
(offline mode; the rows, metric definitions, group, tags and config a real run receives) and the
TensorBoard event files it writes."""

import datasets
import pytest
import torch
import transformers

from conftest import tiny_model
from growth.reporting import attach_reporting
from growth.trainer import enable_growth

SCHEDULE = {"initial_depth": 2, "unit": "steps", "points": [[4, 3], [8, 4]]}
RECIPE = {"name": "tiny_test", "label": "stack_last", "growth": {"schedule": SCHEDULE, "operator": "stack_last"}}


def _trainer(out, report_to, max_steps=12):
    g = torch.Generator().manual_seed(0)
    ids = ((torch.randint(2, 60, (48, 1), generator=g) + torch.arange(16)) % 95 + 2).tolist()
    ds = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = transformers.TrainingArguments(
        str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1,
        report_to=report_to, use_cpu=True, disable_tqdm=True, seed=0, eval_strategy="steps", eval_steps=4,
        save_strategy="no", run_name="tiny_test")
    trainer = transformers.Trainer(model=tiny_model("llama", layers=2).train(), args=args, train_dataset=ds,
                                   eval_dataset=ds.select(range(4)))
    return enable_growth(trainer, {"schedule": SCHEDULE})


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(out))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(out / "tb"))
    for key in ("WANDB_RUN_GROUP", "WANDB_TAGS"):  # attach_reporting sets them; monkeypatch restores
        monkeypatch.delenv(key, raising=False)
    import wandb

    # wandb keeps process-wide settings (WANDB_DIR included) from the first run in this process;
    # start from a clean singleton so this test's directory is used, and leave one behind.
    wandb.teardown()
    yield out
    wandb.teardown()


def record_wandb_calls(monkeypatch) -> tuple[list[dict], list[tuple]]:
    """(rows passed to Run.log, (name, step_metric) passed to Run.define_metric), from every caller
    (the HF WandbCallback and growth/reporting.py), on top of the real offline run."""
    import wandb

    rows, defined = [], []
    real_log, real_define = wandb.Run.log, wandb.Run.define_metric

    def log(self, data, *args, **kwargs):
        rows.append(dict(data))
        return real_log(self, data, *args, **kwargs)

    def define_metric(self, name, *args, **kwargs):
        defined.append((name, kwargs.get("step_metric")))
        return real_define(self, name, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", log)
    monkeypatch.setattr(wandb.Run, "define_metric", define_metric)
    return rows, defined


def test_wandb_and_tensorboard_hold_compute_and_growth(wandb_env, monkeypatch):
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = wandb_env
    rows, defined = record_wandb_calls(monkeypatch)
    trainer = _trainer(out, ["wandb", "tensorboard"])
    cb = attach_reporting(trainer, RECIPE, label="stack_last", tags=["family:llama", "init:copy"])
    trainer.train()
    run_group, run_tags, config = wandb.run.group, set(wandb.run.tags), dict(wandb.run.config)
    summary_events = wandb.run.summary["growth/events"]
    wandb.finish()

    # Growth events with the loss just before and the mean loss of the next 5 training logs.
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert [(e["step"], e["from_depth"], e["to_depth"]) for e in cb.events] == [(4, 2, 3), (8, 3, 4)]
    assert cb.events[0]["loss_after"] == pytest.approx(sum(losses[s] for s in range(5, 10)) / 5)
    assert cb.events[0]["loss_after_logs"] == 5
    # The second event's window is cut short by the end of the run (steps 9-12).
    assert cb.events[1]["loss_after"] == pytest.approx(sum(losses[s] for s in range(9, 13)) / 4)
    assert cb.events[1]["loss_after_logs"] == 4
    assert cb.events[0]["loss_before"] == pytest.approx(losses[4])

    # wandb: compute and depth series from the Trainer's logs, the events, the x-axis, group, tags, config.
    train = [r for r in rows if "train/loss" in r]
    # The growth at step s runs before step s is logged: the depth logged at s is the new one.
    depth = {s: 2 if s < 4 else 3 if s < 8 else 4 for s in range(1, 13)}
    assert [r["train/growth/depth"] for r in train] == list(depth.values())
    flops = [r["train/compute/flops"] for r in train]
    assert flops == sorted(flops) and flops[0] > 0
    assert [r["train/compute/tokens"] for r in train] == [64 * s for s in range(1, 13)]
    assert all("train/growth/params" in r for r in train)
    events = [r for r in rows if "growth/to_depth" in r]
    assert [(r["growth/event_step"], r["growth/from_depth"], r["growth/to_depth"]) for r in events] == [(4, 2, 3), (8, 3, 4)]
    assert events[0]["growth/loss_before"] == pytest.approx(losses[4])
    assert events[0]["growth/seconds"] >= 0 and events[0]["train/compute/flops"] == pytest.approx(flops[3])
    after = [r["growth/loss_after"] for r in rows if "growth/loss_after" in r]
    assert after == pytest.approx([cb.events[0]["loss_after"], cb.events[1]["loss_after"]])
    assert any("eval/loss" in r for r in rows)

    assert [e["step"] for e in summary_events] == [4, 8] and summary_events[1]["loss_after_logs"] == 4
    assert ("train/*", "train/compute/flops") in defined and ("eval/*", "train/compute/flops") in defined
    assert ("growth/*", "train/compute/flops") in defined
    assert run_group == "stack_last" and run_tags == {"stack_last", "family:llama", "init:copy"}
    assert config["recipe"] == RECIPE

    # TensorBoard: the same scalars, at optimizer steps.
    tb = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    tb.Reload()
    tags = set(tb.Tags()["scalars"])
    assert {"train/compute/flops", "train/compute/tokens", "train/growth/depth", "train/growth/params",
            "growth/to_depth", "growth/loss_before", "growth/loss_after", "growth/seconds"} <= tags
    assert {e.step: e.value for e in tb.Scalars("train/growth/depth")} == depth  # eval logs repeat a step
    assert [(e.step, e.value) for e in tb.Scalars("growth/to_depth")] == [(4, 3.0), (8, 4.0)]
    assert [e.value for e in tb.Scalars("growth/loss_after")] == pytest.approx(after)


def test_without_wandb_or_tensorboard(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    trainer = _trainer(tmp_path / "run", [], max_steps=10)
    cb = attach_reporting(trainer, RECIPE, label="stack_last")
    trainer.train()
    import os

    assert "WANDB_RUN_GROUP" not in os.environ  # not touched when wandb is not reported to
    assert [(e["step"], e["to_depth"], e["loss_after_logs"]) for e in cb.events] == [(4, 3, 5), (8, 4, 2)]
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / "tb").exists()


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="needs a transformers.Trainer"):
        attach_reporting(object())
    with pytest.raises(ValueError, match="loss_after_logs: must be at least 1, got 0"):
        attach_reporting(_trainer(tmp_path / "run", []), loss_after_logs=0)


def test_wandb_group_follows_each_run_in_one_process_unless_the_user_set_it(tmp_path, monkeypatch):
    """eval/study.py and eval/sweep.py train run after run in one process: each run's wandb group is
    its own label, not the first run's; a group the user exported is never replaced."""
    import os

    for key in ("WANDB_RUN_GROUP", "WANDB_TAGS"):
        monkeypatch.delenv(key, raising=False)
    for label in ("fixed_2", "wsd_late_2-4-6"):
        attach_reporting(_trainer(tmp_path / label, ["wandb"]), RECIPE, label=label, tags=["b0.5"])
        assert os.environ["WANDB_RUN_GROUP"] == label and os.environ["WANDB_TAGS"] == f"{label},b0.5"
    monkeypatch.setenv("WANDB_RUN_GROUP", "my-group")
    attach_reporting(_trainer(tmp_path / "mine", ["wandb"]), RECIPE, label="other")
    assert os.environ["WANDB_RUN_GROUP"] == "my-group"
