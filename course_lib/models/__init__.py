"""The capstone: a tiny modern Transformer LM (Llama/Mistral-style) assembled from the course's pieces.

model.py: ``GPTConfig`` (one field per choice of Lecture 4's "Modern Transformer Models" slide), RMSNorm,
SwiGLU, a top-k mixture of experts, blocks, ``GPT`` with cached generation (KV cache, rolling buffer).
train.py: characters of the pydoc text, AdamW with decoupled weight decay, z-loss, the training loop.
"""
from .model import (GPT, GPTConfig, MoE, RMSNorm, RollingKVCache, SwiGLU, gpt2_config, modern_config, rms_norm,
                    sample_next, swiglu, swiglu_width, topk_routing)
from .train import (CharTokenizer, TrainConfig, char_data, evaluate, lm_loss, make_optimizer, param_groups,
                    train_lm, z_loss)

__all__ = ["GPT", "GPTConfig", "MoE", "RMSNorm", "RollingKVCache", "SwiGLU", "gpt2_config", "modern_config",
           "rms_norm", "sample_next", "swiglu", "swiglu_width", "topk_routing", "CharTokenizer", "TrainConfig",
           "char_data", "evaluate", "lm_loss", "make_optimizer", "param_groups", "train_lm", "z_loss"]
