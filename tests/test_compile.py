"""torch.compile and activation checkpointing across growth (growth/compile.py), on one process.

The grown model must run compiled (new blocks through the compiled graph, no eager fallback,
no recompile per step) and new blocks must be checkpointed like the old ones (their activations
recomputed in backward)."""

import datasets
import pytest
import torch
import transformers
from torch._dynamo.utils import counters

import growth
from growth.compile import checkpoint_blocks, compile_blocks, compiled_blocks
from growth.trainer import enable_growth

from conftest import tiny_model


def _data():
    g = torch.Generator().manual_seed(0)
    ids = ((torch.randint(2, 60, (64, 1), generator=g) + torch.arange(16)) % 95 + 2).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})


def _trainer(out, points, init="copy", max_steps=6, **kw):
    args = transformers.TrainingArguments(
        out, max_steps=max_steps, per_device_train_batch_size=4, learning_rate=3e-3, logging_steps=1, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, save_strategy="no", **kw)
    trainer = transformers.Trainer(model=tiny_model("llama", layers=2).train(), args=args, train_dataset=_data())
    return enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": points}, "init": init})


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=False):  # compile_blocks sets it: restored after
        yield
    torch._dynamo.reset()


def _params_through_compiled_graphs(loss) -> set[int]:
    """ids of the parameters whose gradient comes out of an AOT-compiled graph (CompiledFunctionBackward)."""
    seen, found, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None and type(node).__name__.startswith("CompiledFunction") and hasattr(nxt, "variable"):
                found.add(id(nxt.variable))
            stack.append(nxt)
    return found


def test_grown_model_runs_compiled(tmp_path, fresh_dynamo):
    # aot_eager: dynamo + AOT autograd as with inductor, without inductor's slow codegen on CPU.
    trainer = _trainer(tmp_path, [[2, 3], [4, 4]], init="random", torch_compile=True, torch_compile_backend="aot_eager")
    graphs = {}

    class Count(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            graphs[state.global_step] = counters["stats"]["unique_graphs"]

    trainer.add_callback(Count())
    trainer.train()
    model = trainer.model
    assert growth.current_depth(model) == 4 and compiled_blocks(model) == [True] * 4
    # One graph, traced at step 1, serves every block at depths 2, 3 and 4: growth recompiles nothing,
    # nothing recompiles per step, and no block broke its graph (fullgraph) or fell back to eager.
    assert graphs == {s: 1 for s in range(1, 7)}, graphs
    assert not counters["graph_break"]
    # The grown model's blocks run through compiled code: every block parameter (copies and fresh
    # blocks included) gets its gradient from an AOT-compiled graph. (Called without the Trainer's
    # num_items_in_batch, so dynamo traces a second graph for this signature.)
    batch = {k: torch.tensor(v[:4]) for k, v in _data()[:4].items()}
    loss = trainer.model_wrapped(**batch).loss
    through = _params_through_compiled_graphs(loss)
    blocks = {n: p for n, p in model.named_parameters() if ".layers." in n}
    assert [n for n, p in blocks.items() if id(p) not in through] == []
    # ... with each block's own weights (a compiled copy must not call its source's compiled code).
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        eager = trainer.model_wrapped(**batch).loss
    torch.testing.assert_close(loss.detach(), eager, rtol=1e-5, atol=1e-6)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_every_family_compiles_one_graph_across_growth(fresh_dynamo):
    x = torch.randint(2, 90, (2, 16))
    for family in ("gpt2", "gpt_neox"):  # llama: the Trainer test above
        torch._dynamo.reset()
        counters.clear()
        model = tiny_model(family, layers=2).train()
        model.config.use_cache = False  # as the Trainer sets it (TrainingArguments.use_cache)
        assert compile_blocks(model, backend="eager") == [0, 1]
        model(input_ids=x, labels=x).loss.backward()
        growth.grow(model, 4, "stack_last", "random", None)
        assert compiled_blocks(model) == [True, True, False, False]  # copies and fresh blocks lose it
        assert compile_blocks(model, backend="eager") == [2, 3]
        model(input_ids=x, labels=x).loss.backward()
        assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], family


def _forward_counter(layers, counts):
    # A pre-hook: the recompute stops early once it has rebuilt what backward needs, after the
    # MLP's input but possibly before its output (torch.utils.checkpoint's early stop).
    for i, layer in enumerate(layers):
        layer.mlp.register_forward_pre_hook(lambda m, a, i=i: counts.__setitem__(i, counts.get(i, 0) + 1))


def test_new_layers_are_checkpointed(tmp_path, init="random", every_n=2):
    """New blocks (copies: position-dependent every_n_layers; fresh blocks: no flag at all) are
    checkpointed as a fresh model of the new depth would be: their forward runs again in backward."""
    trainer = _trainer(tmp_path, [[2, 4]], init=init, max_steps=3, gradient_checkpointing=True,
                       gradient_checkpointing_kwargs={"every_n_layers": every_n, "use_reentrant": False})
    counts = {}

    class Hooks(transformers.TrainerCallback):
        def on_growth(self, args, state, event):
            _forward_counter(growth.family_of(trainer.model).layers(trainer.model), counts)

    trainer.add_callback(Hooks())
    trainer.train()
    layers = trainer.model.model.layers
    expect = [i % every_n == 0 for i in range(4)]
    assert [layer.gradient_checkpointing for layer in layers] == expect
    # Step 3 ran at depth 4: a checkpointed block's MLP ran twice (forward, recompute), the others once.
    assert counts == {i: 2 if on else 1 for i, on in enumerate(expect)}, counts


def test_checkpoint_blocks_rejects_bad_every_n():
    model = tiny_model("llama", layers=2)
    with pytest.raises(ValueError, match="every_n_layers must be positive, got 0"):
        checkpoint_blocks(model, torch.utils.checkpoint.checkpoint, 0)


def test_compile_with_kv_cache_is_refused(tmp_path):
    trainer = _trainer(tmp_path, [[2, 3]], torch_compile=True, torch_compile_backend="eager", use_cache=True)
    with pytest.raises(ValueError, match="torch_compile: true with use_cache: true"):
        trainer.train()
    assert trainer.state.global_step == 0
