import os
import sys

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FAMILY_NAMES = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox")


def tiny_model(family="llama", layers=2, hidden=32, vocab=97, seed=0, **kw):
    from growth.models import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(family=family, hidden_size=hidden, num_layers=layers, num_heads=4, max_position_embeddings=128, **kw)
    model = build_model(cfg, vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return model.eval()


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture(autouse=True)
def _fresh_wandb():
    """wandb keeps process-wide settings (WANDB_DIR included) from its first run; reset them after
    every test that used it, so the next in-process run writes where its test says."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
