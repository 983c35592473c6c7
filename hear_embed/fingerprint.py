"""The one fingerprint of a model's weights: SHA-256 of its state_dict, so weights are identified by content.

Used by ``hear-embed embed`` (the record in each output file) and by the harness's embedding cache keys.
"""
from __future__ import annotations

import hashlib

import torch


def _hash_state_value(digest, value) -> None:
    """Feed one state_dict value to ``digest``: a plain tensor (dtype, shape, bytes), a quantized tensor
    (integer values, scheme, scales and zero points), a tuple or list of them (dynamic int8 layers pack their
    weights so), else its repr (e.g. a dtype entry)."""
    if isinstance(value, (tuple, list)):
        digest.update(f"{type(value).__name__}:{len(value)}".encode())
        for item in value:
            _hash_state_value(digest, item)
    elif torch.is_tensor(value) and value.is_quantized:
        per_channel = value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        digest.update(f"{value.dtype}:{tuple(value.shape)}:{value.qscheme()}".encode())
        digest.update(value.int_repr().detach().cpu().contiguous().numpy().tobytes())
        scales = value.q_per_channel_scales() if per_channel else torch.tensor([value.q_scale()], dtype=torch.float64)
        zero_points = (value.q_per_channel_zero_points() if per_channel
                       else torch.tensor([value.q_zero_point()], dtype=torch.int64))
        _hash_state_value(digest, scales)
        _hash_state_value(digest, zero_points)
    elif torch.is_tensor(value):
        value = value.detach().cpu().contiguous()
        digest.update(f"{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bfloat16 included
    else:
        digest.update(f"{type(value).__name__}:{value!r}".encode())


def state_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 hex digest of ``module.state_dict()``: every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(f"\0{name}\0".encode())
        _hash_state_value(digest, value)
    return digest.hexdigest()
