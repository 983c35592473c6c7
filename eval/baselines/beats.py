"""BEATs (Chen et al. 2022, microsoft/unilm ``beats/``) as a HEAR module, written here from the paper and the
official code's behaviour; loads the released checkpoints ``{"cfg": ..., "model": state_dict}``
(``BEATs_iter3.pt``, ``BEATs_iter3_plus_AS2M.pt``) with ``torch.load(..., weights_only=True)``.

Pipeline: waveform x 2^15 -> Kaldi fbank (128 mel bins, Povey window, 25 ms / 10 ms; ``eval.baselines.fbank``),
normalised ``(fbank - 15.41663) / (2 * 6.55582)`` -> 16 x 16 patches (16 frames x 16 mel bins, time-major:
8 frequency patches per time step) -> LayerNorm -> linear projection -> convolutional position embedding ->
post-norm ("deep norm") transformer layers with a gated relative position bias shared by all layers.

Timestamp embeddings: the 8 frequency patches of each 160 ms time step are AVERAGED into one vector of the
encoder width (768 for the released models). Averaging keeps the width equal to the other baselines (concatenation
would give 8 x 768 = 6144 values per frame, a much larger probe input) and is what BEATs' own classifier does
(it averages every patch). Step t is stamped at the centre of its 16 fbank frames: 160 t + 87.5 ms. Long clips
are cut into 10.24 s windows (the pre-training length) every 8 s (``eval.baselines.common``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from eval.baselines import common
from eval.baselines.fbank import FbankOptions, fbank, frame_centre_ms, num_frames

FBANK = FbankOptions()  # Kaldi defaults: Povey window, 25 ms / 10 ms, 128 bins
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582
FREQUENCY_BINS = 128


@dataclass(frozen=True)
class BEATsConfig:
    """The ``cfg`` dictionary of a released checkpoint (fields that only matter for training are ignored)."""

    input_patch_size: int = 16  # square patch side, in fbank frames and mel bins
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False  # bias in the patch embedding convolution
    encoder_layers: int = 12  # transformer layers
    encoder_embed_dim: int = 768  # transformer width
    encoder_ffn_embed_dim: int = 3072  # feed-forward hidden width
    encoder_attention_heads: int = 12  # attention heads
    activation_fn: str = "gelu"  # feed-forward activation (only gelu is implemented)
    layer_norm_first: bool = False  # pre-norm layers (False: post-norm, as all released models)
    deep_norm: bool = False  # residual scaled by (2 * encoder_layers) ** 0.25 before the post-norm
    conv_pos: int = 128  # kernel of the convolutional position embedding
    conv_pos_groups: int = 16  # its groups
    relative_position_embedding: bool = False  # T5-style bucketed relative position bias
    num_buckets: int = 320  # relative position buckets (half per direction)
    max_distance: int = 1280  # distance (patches) at which buckets stop growing
    gru_rel_pos: bool = False  # gate the relative bias with the query (WavLM's gated bias)
    finetuned_model: bool = False  # has a label predictor (ignored: embeddings come from the encoder)

    @classmethod
    def from_checkpoint(cls, cfg: dict, source: str) -> "BEATsConfig":
        known = {field.name for field in fields(cls)}
        config = cls(**{key: value for key, value in cfg.items() if key in known})
        if config.activation_fn != "gelu":
            raise ValueError(f"{source}: activation_fn {config.activation_fn!r} is not supported (only 'gelu')")
        if config.deep_norm and config.layer_norm_first:
            raise ValueError(f"{source}: deep_norm and layer_norm_first cannot both be set")
        return config


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """(length, length) bucket of key j relative to query i: exact for small |j - i|, log-spaced up to
    ``max_distance``, one half of the buckets per direction."""
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    scaled = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    return buckets + torch.where(distance < exact, distance, scaled.clamp(max=half - 1))


class GatedRelativeAttention(nn.Module):
    """Multi-head self-attention plus a relative position bias, optionally gated per query and head."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        width, self.heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))
        self.gated = config.gru_rel_pos
        if self.gated:
            self.grep_linear = nn.Linear(width // self.heads, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, key_padding: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C), bias (H, T, T) or None, key_padding (B, T) True = padding -> (B, T, C)."""
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, -1).transpose(1, 2)  # (B, H, T, C / H)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        mask = x.new_zeros(batch, self.heads, length, length)
        if bias is not None:
            if self.gated:  # two sigmoid gates from the query, (B, H, T, 1) each
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            mask = mask + bias
        if key_padding is not None:
            mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """Post-norm (or pre-norm) transformer layer; deep norm scales the residual."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        width = config.encoder_embed_dim
        self.self_attn = GatedRelativeAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, width)
        self.final_layer_norm = nn.LayerNorm(width)
        self.pre_norm = config.layer_norm_first
        self.residual_scale = (2 * config.encoder_layers) ** 0.25 if config.deep_norm else 1.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, key_padding: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.self_attn(self.self_attn_layer_norm(x), bias, key_padding)
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, bias, key_padding))
        return self.final_layer_norm(x * self.residual_scale + self.fc2(F.gelu(self.fc1(x))))


class BEATsEncoder(nn.Module):
    """Waveform -> hidden states of every layer; parameter names follow the official checkpoints."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        self.config = config
        patch, width = config.input_patch_size, config.encoder_embed_dim
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, kernel_size=patch, stride=patch, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = nn.Linear(config.embed_dim, width) if config.embed_dim != width else None
        self.encoder = nn.Module()
        conv = nn.Conv1d(width, width, kernel_size=config.conv_pos, padding=config.conv_pos // 2,
                         groups=config.conv_pos_groups)
        self.encoder.pos_conv = nn.Sequential(nn.utils.parametrizations.weight_norm(conv, dim=2))
        self.encoder.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.encoder.layer_norm = nn.LayerNorm(width)
        self.relative_attention_bias = (nn.Embedding(config.num_buckets, config.encoder_attention_heads)
                                        if config.relative_position_embedding else None)

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, samples) in [-1, 1] -> (B, frames, 128) normalised fbank."""
        return (fbank(waveform * 2 ** 15, FBANK) - FBANK_MEAN) / (2 * FBANK_STD)

    def forward(self, waveform: torch.Tensor, padding_mask: torch.Tensor | None = None,
                num_layers: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """waveform (B, samples), padding_mask (B, samples) True = padding -> hidden states [(B, P, C)] after the
        position embedding and norm (index 0) and after each of the first ``num_layers`` layers (index j), and the
        patch padding mask (B, P), reduced from the sample mask as the official code does."""
        features = self.fbank(waveform)
        if padding_mask is not None:
            padding_mask = _reduce_mask(padding_mask, features.shape[1])
        return self.from_fbank(features, padding_mask, num_layers)

    def from_fbank(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None,
                   num_layers: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """:meth:`forward` from the normalised fbank (B, frames, 128) and its frame padding mask (B, frames)."""
        x = self.patch_embedding(features[:, None])  # (B, E, time patches, 8)
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # time-major patches (B, P, E)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        if padding_mask is not None:
            padding_mask = _reduce_mask(padding_mask, x.shape[1])
            x = x.masked_fill(padding_mask[..., None], 0.0)
        position = self.encoder.pos_conv(x.transpose(1, 2))
        if self.config.conv_pos % 2 == 0:
            position = position[..., :-1]  # "same" length for an even kernel
        x = x + F.gelu(position).transpose(1, 2)
        if not self.config.layer_norm_first:
            x = self.encoder.layer_norm(x)
        bias = None
        if self.relative_attention_bias is not None:
            buckets = relative_buckets(x.shape[1], self.config.num_buckets, self.config.max_distance)
            bias = self.relative_attention_bias(buckets.to(x.device)).permute(2, 0, 1)  # (H, P, P)
        hidden = [x]
        for layer in self.encoder.layers[:num_layers]:
            x = layer(x, bias, padding_mask)
            hidden.append(x)
        if self.config.layer_norm_first and (num_layers is None or num_layers == len(self.encoder.layers)):
            hidden[-1] = self.encoder.layer_norm(x)
        return hidden, padding_mask


def _reduce_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, n) -> (B, length): drop the ``n % length`` trailing entries, then a step is padding if all its entries
    are (the official ``forward_padding_mask``)."""
    extra = mask.shape[1] % length
    if extra:
        mask = mask[:, :-extra]
    return mask.view(mask.shape[0], length, -1).all(-1)


def load_checkpoint(path: str | Path) -> BEATsEncoder:
    """A released BEATs checkpoint ``{"cfg": dict, "model": state_dict}`` -> encoder in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"BEATs checkpoint {str(path)!r} not found; download BEATs_iter3.pt (see README, "
                         "'Baselines') and pass its path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ValueError(f"{path}: not a loadable BEATs checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or not {"cfg", "model"} <= set(checkpoint):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: a BEATs checkpoint holds 'cfg' and 'model', found {keys}")
    config = BEATsConfig.from_checkpoint(checkpoint["cfg"], str(path))
    encoder = BEATsEncoder(config)
    state = {}
    for key, value in checkpoint["model"].items():
        if key.startswith("predictor."):
            continue
        key = key.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
        key = key.replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1")
        if ".self_attn.relative_attention_bias." in key:  # one table, shared by every layer
            if key.startswith("encoder.layers.0."):
                state["relative_attention_bias.weight"] = value
            continue
        state[key] = value
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match its cfg: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    return encoder.eval()


class BEATsModel(common.BaselineModel):
    """BEATs behind the HEAR API (see the module docstring)."""

    def __init__(self, encoder: BEATsEncoder, **options):
        config = encoder.config
        self.num_layers, self.hidden_size = config.encoder_layers, config.encoder_embed_dim
        self.patch = config.input_patch_size
        self.min_samples = FBANK.window_samples + (self.patch - 1) * FBANK.shift_samples  # one patch of frames
        self.window_samples = FBANK.window_samples + 1023 * FBANK.shift_samples  # 1024 frames, 10.24 s
        self.hop_samples = 800 * FBANK.shift_samples  # 8 s
        super().__init__(options)
        self.encoder = encoder
        self.eval()

    def encode(self, audio: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, _ = self.encoder(audio, num_layers=layer)
        steps = num_frames(audio.shape[1], FBANK) // self.patch
        frames = hidden[layer].view(audio.shape[0], steps, FREQUENCY_BINS // self.patch, -1).mean(dim=2)
        centres = torch.arange(steps, dtype=torch.float64) * self.patch + (self.patch - 1) / 2
        return frames, frame_centre_ms(centres, FBANK)


# The iter3 architecture as published (90.3 M parameters); "random" builds it with seed-0 random weights.
ITER3 = BEATsConfig(input_patch_size=16, embed_dim=512, deep_norm=True, relative_position_embedding=True,
                    num_buckets=320, max_distance=800, gru_rel_pos=True)


def load_model(model_file_path: str = "", **options) -> BEATsModel:
    """HEAR API: a released BEATs checkpoint file, or "random" (the iter3 architecture, seed 0: cost and
    architecture checks only); options as hear_embed's (``layer``, ``scene_pooling``, ``windows_per_group``)."""
    if model_file_path == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return BEATsModel(BEATsEncoder(ITER3).eval(), **options)
    if not model_file_path:
        raise ValueError("BEATs needs a checkpoint: load_model('BEATs_iter3.pt'); see README, 'Baselines'")
    return BEATsModel(load_checkpoint(model_file_path), **options)


get_timestamp_embeddings = common.get_timestamp_embeddings
get_scene_embeddings = common.get_scene_embeddings
