"""Building models by family and size (recipes name a family and a size, or an HF config/path)."""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers

from .families import SUPPORTED, family_of


@dataclass
class ModelConfig:
    """Either ``family`` plus sizes (a fresh model), or ``name_or_path`` (an HF config / checkpoint)."""

    family: str | None = field(default="llama", metadata={"help": "llama | mistral | qwen2 | qwen3 | gpt2 | gpt_neox (or use name_or_path)"})
    hidden_size: int = field(default=64, metadata={"help": "model width"})
    num_layers: int = field(default=2, metadata={"help": "the depth training starts at; growth adds layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads"})
    num_kv_heads: int | None = field(default=None, metadata={"help": "key/value heads (GQA); None = num_heads"})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width; None = family default (4x for gpt2/neox, ~8/3x for gated MLPs)"})
    max_position_embeddings: int = field(default=2048, metadata={"help": "longest sequence the model accepts"})
    name_or_path: str | None = field(default=None, metadata={"help": "HF hub name or local dir with config.json (weights too with from_pretrained)"})
    from_pretrained: bool = field(default=False, metadata={"help": "load weights from name_or_path instead of a fresh initialisation"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2 ..."})
    extra: dict | None = field(default=None, metadata={"help": "further HF config fields, passed to the config class"})

    def __post_init__(self):
        if self.name_or_path is None and self.family is None:
            raise ValueError("model: give either model.family (with sizes) or model.name_or_path")
        if self.name_or_path is None:
            family_of(type("C", (), {"model_type": self.family})())  # raises with the supported list
        if self.from_pretrained and self.name_or_path is None:
            raise ValueError("model.from_pretrained: true needs model.name_or_path")
        for field in ("hidden_size", "num_layers", "num_heads", "max_position_embeddings"):
            if getattr(self, field) < 1:
                raise ValueError(f"model.{field} must be positive, got {getattr(self, field)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size {self.hidden_size} is not divisible by model.num_heads {self.num_heads}")
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ValueError(f"model.num_kv_heads {self.num_kv_heads} must divide model.num_heads {self.num_heads}")


def build_config(cfg: ModelConfig, vocab_size: int | None = None, **token_ids) -> transformers.PretrainedConfig:
    """HF config for ``cfg``; ``token_ids`` (bos_token_id, eos_token_id, pad_token_id) come from the tokenizer."""
    if cfg.name_or_path is not None:
        config = transformers.AutoConfig.from_pretrained(cfg.name_or_path, **(cfg.extra or {}))
        family_of(config)
        if vocab_size is not None and config.vocab_size < vocab_size:
            raise ValueError(f"model.name_or_path: vocab_size {config.vocab_size} is smaller than the tokenizer's {vocab_size}")
        return config
    h, n, heads = cfg.hidden_size, cfg.num_layers, cfg.num_heads
    kv = cfg.num_kv_heads or heads
    vocab = vocab_size or 32000
    extra = {**token_ids, **(cfg.extra or {})}
    if cfg.family == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab, n_embd=h, n_layer=n, n_head=heads, n_inner=cfg.intermediate_size,
                                       n_positions=cfg.max_position_embeddings, **extra)
    if cfg.family == "gpt_neox":
        return transformers.GPTNeoXConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                                          intermediate_size=cfg.intermediate_size or 4 * h,
                                          max_position_embeddings=cfg.max_position_embeddings, **extra)
    # Gated MLPs: 8/3 * hidden keeps the parameter count of a 4x MLP, rounded up to a multiple of 32.
    inter = cfg.intermediate_size or -(-(8 * h // 3) // 32) * 32
    kwargs = dict(vocab_size=vocab, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
                  intermediate_size=inter, max_position_embeddings=cfg.max_position_embeddings)
    if cfg.family == "qwen3":
        kwargs["head_dim"] = h // heads
    try:  # the family's config class (LlamaConfig, Qwen3Config, ...), as transformers maps model types
        return transformers.AutoConfig.for_model(cfg.family, **kwargs, **extra)
    except ValueError as e:
        raise ValueError(f"model.family: {cfg.family!r} is not known to transformers {transformers.__version__} ({e}); "
                         f"supported: {SUPPORTED}") from None


def build_model(cfg: ModelConfig, vocab_size: int | None = None, **token_ids):
    if cfg.from_pretrained:
        return transformers.AutoModelForCausalLM.from_pretrained(cfg.name_or_path, attn_implementation=cfg.attn_implementation)
    config = build_config(cfg, vocab_size, **token_ids)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=cfg.attn_implementation)
