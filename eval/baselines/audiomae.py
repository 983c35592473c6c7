"""AudioMAE (Huang et al. 2022, facebookresearch/AudioMAE) ViT encoder as a HEAR module.

Loads the released checkpoints (``pretrained.pth``: ``{"model": state_dict}`` in timm's ViT key names --
``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.{i}.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 /
mlp.fc2``, ``norm`` -- plus decoder keys, which are ignored) with ``torch.load(..., weights_only=True)``
(``argparse.Namespace``, which the training script stores beside the weights, is allow-listed). The
architecture is read from the weights: width from the patch embedding, depth from the blocks, MLP width from
``fc1``; heads = width / 64 (ViT-B/16: 12), LayerNorm eps 1e-6, GELU, pre-norm blocks; the encoder is written here
(no timm dependency).

Input: 1024 x 128 Kaldi fbank (Hann window, htk_compat, no energy; ``eval.baselines.fbank``) of the clip minus
its mean, zero-padded to 1024 frames, normalised ``(fbank + 4.2677393) / (2 * 4.5689974)`` (AudioMAE's AudioSet
statistics). 16 x 16 patches, time-major (64 time x 8 frequency). Timestamp embeddings: the 8 frequency patches
of each 160 ms step averaged (as for BEATs), the [CLS] token dropped, step t stamped at ``160 t + 87.5`` ms; steps
that start past the clip's real frames are dropped. ``layer=j`` is block j's output; the last layer is followed by
the final ``norm``. Long clips: windows of 1024 frames every 512 (``eval.baselines.common``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from eval.baselines import common
from eval.baselines.fbank import FbankOptions, fbank, frame_centre_ms, num_frames

FBANK = FbankOptions(window="hanning", htk_compat=True)
NORM_MEAN, NORM_STD = -4.2677393, 4.5689974
TARGET_FRAMES, PATCH, HEAD_WIDTH = 1024, 16, 64


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's names)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(width, mlp_width)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(mlp_width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AudioMAEEncoder(nn.Module):
    """Patch embedding + learned/fixed position table + ViT blocks + final norm, on (B, 1024, 128) fbank."""

    def __init__(self, width: int = 768, depth: int = 12, mlp_width: int = 3072):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, width, kernel_size=PATCH, stride=PATCH)
        patches = (TARGET_FRAMES // PATCH) * (FBANK.num_mel_bins // PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + patches, width))
        self.blocks = nn.ModuleList(Block(width, width // HEAD_WIDTH, mlp_width) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, features: torch.Tensor, num_layers: int) -> torch.Tensor:
        """(B, 1024, 128) -> (B, 512 patches, C) after block ``num_layers`` (and ``norm`` after the last)."""
        x = self.patch_embed.proj(features[:, None]).flatten(2).transpose(1, 2)  # (B, 64 x 8, C), time-major
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks[:num_layers]:
            x = block(x)
        if num_layers == len(self.blocks):
            x = self.norm(x)
        return x[:, 1:]


def load_checkpoint(path: str | Path) -> AudioMAEEncoder:
    """A released AudioMAE checkpoint (``{"model": state_dict}``, or a bare state dict) -> encoder in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"AudioMAE checkpoint {str(path)!r} not found; download pretrained.pth (see README, "
                         "'Baselines') and pass its path")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ValueError(f"{path}: not a loadable AudioMAE checkpoint ({type(error).__name__}: {error})") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "patch_embed.proj.weight" not in state:
        raise ValueError(f"{path}: no 'patch_embed.proj.weight' in the state dict; expected AudioMAE's ViT keys")
    width = state["patch_embed.proj.weight"].shape[0]
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    encoder = AudioMAEEncoder(width, depth, state["blocks.0.mlp.fc1.weight"].shape[0])
    wanted = encoder.state_dict()
    weights = {key: value for key, value in state.items() if key in wanted}
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise ValueError(f"{path}: missing encoder weights {missing[:5]}")
    bad = [key for key in weights if weights[key].shape != wanted[key].shape]
    if bad:
        raise ValueError(f"{path}: {bad[0]} has shape {tuple(weights[bad[0]].shape)}, expected "
                         f"{tuple(wanted[bad[0]].shape)} (a 1024 x 128 input, 16 x 16 patches)")
    encoder.load_state_dict(weights)
    return encoder.eval()


class AudioMAEModel(common.BaselineModel):
    """AudioMAE's encoder behind the HEAR API (see the module docstring)."""

    min_samples = FBANK.window_samples
    window_samples = FBANK.window_samples + (TARGET_FRAMES - 1) * FBANK.shift_samples
    hop_samples = TARGET_FRAMES // 2 * FBANK.shift_samples

    def __init__(self, encoder: AudioMAEEncoder, **options):
        self.num_layers, self.hidden_size = len(encoder.blocks), encoder.norm.normalized_shape[0]
        super().__init__(options)
        self.encoder = encoder
        self.eval()

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """The clip minus its mean sample, as AudioMAE's data loader does."""
        return audio - audio.mean(dim=1, keepdim=True)

    def encode(self, audio: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        bank = fbank(audio, FBANK)
        bank = F.pad(bank, (0, 0, 0, TARGET_FRAMES - bank.shape[1]))
        patches = self.encoder((bank - NORM_MEAN) / (2 * NORM_STD), layer)
        grid = patches.view(len(audio), TARGET_FRAMES // PATCH, FBANK.num_mel_bins // PATCH, -1)
        steps = -(-num_frames(audio.shape[1], FBANK) // PATCH)  # steps that start inside the clip
        centres = torch.arange(steps, dtype=torch.float64) * PATCH + (PATCH - 1) / 2
        return grid[:, :steps].mean(dim=2), frame_centre_ms(centres, FBANK)


def load_model(model_file_path: str = "", **options) -> AudioMAEModel:
    """HEAR API: a released AudioMAE checkpoint (required), or "random" (ViT-B/16, seed 0, fixed-free position
    table of random values: architecture and cost only)."""
    if model_file_path == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            encoder = AudioMAEEncoder()
            nn.init.normal_(encoder.pos_embed, std=0.02)
            nn.init.normal_(encoder.cls_token, std=0.02)
        return AudioMAEModel(encoder.eval(), **options)
    if not model_file_path:
        raise ValueError("AudioMAE needs a checkpoint: load_model('pretrained.pth'); see README, 'Baselines'")
    return AudioMAEModel(load_checkpoint(model_file_path), **options)


get_timestamp_embeddings = common.get_timestamp_embeddings
get_scene_embeddings = common.get_scene_embeddings
