"""A requested backend engages or the run stops before its first step (growth.trainer.check_backend_engaged).

The FSDP case (accelerate drops the plugin on CPU) is run for real across 2 processes in
tests/test_fsdp.py; these are the in-process cases: processes that would each train alone, and
a DeepSpeed request that left the model unwrapped."""

import datasets
import pytest
import transformers

from growth.trainer import enable_growth


def _trainer(tmp_path, make_model, **kw):
    ids = [[(i + j) % 95 + 2 for j in range(16)] for i in range(16)]
    data = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = transformers.TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                                          disable_tqdm=True, save_strategy="no", **kw)
    trainer = transformers.Trainer(model=make_model("llama", layers=2).train(), args=args, train_dataset=data)
    return enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": [[1, 3]]}}, run_log=False)


def test_processes_that_would_train_alone_fail_loudly(tmp_path, make_model, monkeypatch):
    # A launcher started 2 processes, but without --use_cpu accelerate on a CPU machine sees one:
    # each rank would train the whole run alone on the same data.
    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = _trainer(tmp_path, make_model)
    with pytest.raises(RuntimeError, match=r"2 processes were launched but the Trainer sees 1 .*--use_cpu true"):
        trainer.train()
    assert trainer.state.global_step == 0 and trainer.model.config.num_hidden_layers == 2


def test_deepspeed_that_did_not_engage_fails_loudly(tmp_path, make_model, monkeypatch):
    trainer = _trainer(tmp_path, make_model, use_cpu=True)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # requested through the launcher, yet no engine is built
    with pytest.raises(RuntimeError, match="DeepSpeed was requested but the model is wrapped in LlamaForCausalLM"):
        trainer.train()
    assert trainer.state.global_step == 0

