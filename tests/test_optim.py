"""Optimizer-state transfer on torch AdamW with the Trainer's decay / no-decay grouping."""

import pytest
import torch

import growth

from conftest import tiny_model


def _groups(model):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]


def _trained(steps=3, family="llama"):
    model = tiny_model(family, layers=2).train()
    opt = torch.optim.AdamW(_groups(model), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    x = torch.randint(0, 97, (4, 16))
    for _ in range(steps):
        model(x, labels=x).loss.backward()
        opt.step(), sched.step(), opt.zero_grad()
    return model, opt, sched, x


@pytest.mark.parametrize("policy", ["copy", "zero", "fresh"])
def test_state_transfer_policies(policy):
    model, opt, sched, x = _trained()
    old = {n: p for n, p in model.named_parameters()}
    before = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in old.items()}
    mapping = growth.grow(model, 4, "stack_all", optimizer=opt, optimizer_state=policy)
    assert mapping == [0, 1, 0, 1]
    # every old parameter: same object, state unchanged to the last bit
    for n, p in old.items():
        for k, v in before[n].items():
            assert torch.equal(opt.state[p][k], v), (n, k)
    grown = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(grown)
    for n, p in grown.items():
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0), n
    for i, src in ((2, 0), (3, 1)):
        for name, p in model.model.layers[i].named_parameters():
            source = before[f"model.layers.{src}.{name}"]
            state = opt.state.get(p, {})
            if policy == "fresh":
                assert state == {}
            elif policy == "copy":
                assert all(torch.equal(state[k], source[k]) for k in source)
                assert state["exp_avg"].data_ptr() != opt.state[old[f"model.layers.{src}.{name}"]]["exp_avg"].data_ptr()
            else:
                assert torch.equal(state["step"], source["step"])
                assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()


def test_groups_follow_model_order_and_resume_into_a_new_optimizer():
    model, opt, sched, x = _trained()
    growth.grow(model, 3, optimizer=opt)
    fresh = torch.optim.AdamW(_groups(model), lr=1e-2)
    for g, f in zip(opt.param_groups, fresh.param_groups):
        assert [id(p) for p in g["params"]] == [id(p) for p in f["params"]]
    fresh.load_state_dict(opt.state_dict())
    for p in model.parameters():
        for k, v in opt.state[p].items():
            assert torch.equal(fresh.state[p][k], v)


def test_lr_schedule_continues_and_new_layers_train():
    model, opt, sched, x = _trained()
    twin_model, twin_opt, twin_sched, _ = _trained()
    growth.grow(model, 4, optimizer=opt)
    new = model.model.layers[3].mlp.up_proj.weight.detach().clone()
    model(x, labels=x).loss.backward()
    opt.step(), sched.step(), twin_opt.step(), twin_sched.step()
    assert sched.get_last_lr() == twin_sched.get_last_lr()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in twin_opt.param_groups]
    assert model.model.layers[3].mlp.up_proj.weight.grad is not None
    assert not torch.equal(model.model.layers[3].mlp.up_proj.weight, new)


def test_random_init_new_params_take_group_step_with_zero_moments():
    model, opt, sched, x = _trained()
    growth.grow(model, 3, init="random", optimizer=opt)
    p = model.model.layers[2].mlp.up_proj.weight
    assert torch.equal(opt.state[p]["step"], torch.tensor(3.0))
    assert not opt.state[p]["exp_avg"].any()


def test_optimizer_not_built_on_model_raises():
    model, opt, sched, x = _trained()
    other = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=r"optimizer: block parameters \['0.self_attn.q_proj.weight'"):
        growth.grow(model, 3, optimizer=other)
    assert growth.current_depth(model) == 2 and model.config.num_hidden_layers == 2
