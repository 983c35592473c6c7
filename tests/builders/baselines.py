"""Builders of small random baseline weights, shared by the baseline test modules."""
from __future__ import annotations

import torch

from eval.baselines import speech_transformers

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32),
             conv_kernel=(10, 64), conv_stride=(5, 64), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def small_folder(name: str, folder, **extra):
    """A random small model of family ``name`` written with ``save_pretrained``; returns (folder, model)."""
    import transformers

    family = speech_transformers.FAMILIES[name]
    torch.manual_seed(0)
    model = getattr(transformers, family.model_class)(getattr(transformers, family.config_class)(**SMALL, **extra))
    model.save_pretrained(folder)
    return folder, model.eval()
