"""Growth on real tiny HF models of every supported family."""

import pytest
import torch
from torch.testing import assert_close

import growth
from growth.models import ModelConfig, build_model

from conftest import FAMILY_NAMES, tiny_model

# Options that make position-dependent behaviour visible: GPT-2 divides scores by (layer_idx + 1),
# Qwen2/Qwen3 use sliding attention from layer 1 on with a window shorter than the inputs.
EXTRA = {
    "gpt2": {"scale_attn_by_inverse_layer_idx": True},
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    "qwen3": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
}


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("operator", ["stack_last", "stack_middle", "stack_all", "interleave"])
def test_zero_init_preserves_function(family, operator):
    # GPT-2's optional scale_attn_by_inverse_layer_idx ties a block's function to its position,
    # so a moved block computes something else by design; the default GPT-2 config is tested.
    model = tiny_model(family, layers=3, extra=None if family == "gpt2" else EXTRA.get(family))
    _perturb(model)
    x = torch.randint(0, 97, (2, 12))
    before = model(x).logits
    mapping = growth.grow(model, 5, operator, init="zero")
    assert len(mapping) == 5 and growth.current_depth(model) == 5
    assert_close(model(x).logits, before, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_grown_model_is_consistent(family, tmp_path):
    """Config, layer indices, logits of a freshly built deeper model, KV-cache generate, save/load."""
    extra = EXTRA.get(family)
    model = tiny_model(family, layers=2, extra=extra)
    growth.grow(model, 4, "stack_last")
    _perturb(model)  # make every layer distinct, so a stale layer index cannot go unnoticed
    assert model.config.num_hidden_layers == 4
    fresh = build_model(ModelConfig(family=family, hidden_size=32, num_layers=4, num_heads=4, max_position_embeddings=128, extra=extra),
                        97, bos_token_id=0, eos_token_id=1, pad_token_id=1).eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randint(2, 97, (2, 10))
    assert_close(model(x).logits, fresh(x).logits, rtol=0, atol=0)
    if family in ("qwen2", "qwen3"):
        assert model.config.layer_types == fresh.config.layer_types
        assert [l.self_attn.sliding_window for l in model.model.layers] == [None, 4, 4, 4]
    if family == "gpt2":
        assert [l.attn.scaling for l in model.transformer.h] == [l.attn.scaling for l in fresh.transformer.h]

    out = model.generate(x, max_new_tokens=6, do_sample=False, use_cache=True, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=1)
    full = model(out.sequences).logits[:, x.shape[1] - 1 : -1]
    assert_close(torch.stack(out.logits, 1), full, rtol=1e-4, atol=1e-4)

    model.save_pretrained(tmp_path)
    import transformers

    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.num_hidden_layers == 4
    assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_copy_is_exact_and_scaled_copy_scales_branch_outputs():
    model = tiny_model("llama", layers=2)
    src = {k: v.clone() for k, v in model.model.layers[1].state_dict().items()}
    growth.grow(model, 4, "stack_last", init="scaled_copy", beta=0.5, block=1)
    for i in (2, 3):
        new = model.model.layers[i].state_dict()
        for k, v in src.items():
            scale = 0.5 if k in ("self_attn.o_proj.weight", "mlp.down_proj.weight") else 1.0
            assert torch.equal(new[k], v * scale), k
    # copies are distinct tensors: training one does not move its source
    assert model.model.layers[2].mlp.up_proj.weight.data_ptr() != model.model.layers[1].mlp.up_proj.weight.data_ptr()

    model = tiny_model("gpt_neox", layers=2)
    growth.grow(model, 3, init="copy")
    for k, v in model.gpt_neox.layers[1].state_dict().items():
        assert torch.equal(model.gpt_neox.layers[2].state_dict()[k], v), k


def test_scaled_copy_beta_is_the_branch_scale():
    """Each residual branch (attention, MLP) of a beta-copy outputs beta times its source's."""
    model = tiny_model("llama", layers=1)
    _perturb(model)
    growth.grow(model, 2, init="scaled_copy", beta=0.3)
    src, new = model.model.layers
    h = torch.randn(1, 5, 32)
    emb = model.model.rotary_emb(h, torch.arange(5)[None])
    attn = lambda layer: layer.self_attn(layer.input_layernorm(h), position_embeddings=emb, attention_mask=None)[0]  # noqa: E731
    assert_close(attn(new), 0.3 * attn(src), rtol=1e-5, atol=1e-6)
    assert_close(new.mlp(h), 0.3 * src.mlp(h), rtol=1e-5, atol=1e-6)


def test_random_init_uses_model_init_and_returns_none():
    model = tiny_model("llama", layers=2)
    mapping = growth.grow(model, 4, "stack_all", init="random")
    assert mapping == [0, 1, None, None]
    new, old = model.model.layers[2].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(new, old)
    assert abs(new.std().item() - model.config.initializer_range) < 0.005


def test_unsupported_family_lists_supported():
    import transformers

    bert = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="model_type 'bert' is not supported.*supported families: llama, mistral, qwen2, qwen3, gpt2, gpt_neox"):
        growth.grow(bert, 2)


def test_bad_arguments_raise_before_touching_model():
    model = tiny_model("llama", layers=2)
    with pytest.raises(ValueError, match="init: unknown init 'ones'"):
        growth.grow(model, 4, init="ones")
    with pytest.raises(ValueError, match="optimizer_state: unknown policy 'keep'"):
        growth.grow(model, 4, optimizer_state="keep")
    with pytest.raises(ValueError, match="beta must be in"):
        growth.grow(model, 4, init="scaled_copy", beta=2.0)
    with pytest.raises(ValueError, match="target depth 1 must be larger"):
        growth.grow(model, 1)
    assert growth.current_depth(model) == 2 and model.config.num_hidden_layers == 2


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_copies_share_the_model_config(family):
    from transformers import PretrainedConfig

    model = tiny_model(family, layers=2)
    growth.grow(model, 4)
    for layer in growth.family_of(model).layers(model):
        for m in layer.modules():
            for v in vars(m).values():
                if isinstance(v, PretrainedConfig):
                    assert v is model.config
    model.set_attn_implementation("eager")
    x = torch.randint(2, 97, (1, 6))
    assert len(model(x, output_attentions=True).attentions) == 4


def test_core_imports_neither_trainer_nor_deepspeed():
    import subprocess
    import sys

    code = ("import sys, growth, growth.schedule, growth.flops, growth.config; "
            "bad = [m for m in ('transformers.trainer', 'deepspeed', 'accelerate') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
