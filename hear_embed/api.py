"""The HEAR benchmark "common API": ``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings``.

Timestamp embeddings are the Acoustic Model's output frames (50 per second, frame i stamped at
20 i + 5 ms, the middle of the two 10 ms spectrogram frames it covers). Audio of any length is
accepted; clips longer than 6 s are computed window group by window group (see ``long_audio.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hear_embed.acoustic_model import AcousticModel
from hear_embed.frontend import Frontend, encoder_frame_count, encoder_frame_times_ms, min_samples
from hear_embed.long_audio import BlockSource, SourceSummary, acoustic_hidden, summarize, tensor_blocks

SCENE_POOLINGS = ("mean", "max", "mean+max", "mean+std")


@dataclass(frozen=True)
class EmbeddingOptions:
    """What ``load_model(**options)`` accepts (heareval passes ``--model-options`` JSON here)."""

    layer: int | None = None  # transformer layer whose output is the embedding, 1..num_layers; None = last
    scene_pooling: str = "mean+std"  # pooling over time, one of SCENE_POOLINGS (default: results/pooling_study/README.md)
    windows_per_group: int = 4  # 6 s windows encoded together for long audio (memory vs speed)
    quantize: str = "none"  # "int8": torch dynamic int8 Linear layers (CPU only; see hear_embed.export)


def check_options(options: dict, num_layers: int) -> EmbeddingOptions:
    """Validate ``load_model`` keyword options, naming the bad one."""
    known = EmbeddingOptions.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; known options: {sorted(known)}")
    chosen = EmbeddingOptions(**options)
    layer = chosen.layer
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= num_layers):
        raise ValueError(f"layer must be an integer from 1 to {num_layers} (the model's transformer layers), "
                         f"got {layer!r}")
    if chosen.scene_pooling not in SCENE_POOLINGS:
        raise ValueError(f"scene_pooling must be one of {SCENE_POOLINGS}, got {chosen.scene_pooling!r}")
    group = chosen.windows_per_group
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"windows_per_group must be a positive integer, got {group!r}")
    if chosen.quantize not in ("none", "int8"):
        raise ValueError(f"quantize must be 'none' or 'int8', got {chosen.quantize!r}")
    return chosen


def pool_frames(frames: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, T, D) -> (n, D) or (n, 2 D): pooled over time."""
    mean = frames.mean(dim=1)
    if pooling == "mean":
        return mean
    maximum = frames.amax(dim=1)
    if pooling == "max":
        return maximum
    if pooling == "mean+max":
        return torch.cat([mean, maximum], dim=1)
    return torch.cat([mean, frames.std(dim=1, unbiased=False)], dim=1)


class HearEmbedModel(nn.Module):
    """The Frontend and Acoustic Model behind the HEAR API, in eval mode."""

    sample_rate = 16000

    def __init__(self, acoustic_model: AcousticModel, weights_info=None, **options):
        super().__init__()
        self.frontend = Frontend()
        self.acoustic_model = acoustic_model
        self.weights_info = weights_info
        self.options = check_options(options, acoustic_model.config.num_transformer_layers)
        if self.options.quantize == "int8":
            from hear_embed.export import quantize_torch_int8

            acoustic_model = self.acoustic_model = quantize_torch_int8(acoustic_model)
        self.timestamp_embedding_size = acoustic_model.config.hidden_size
        widen = 2 if "+" in self.options.scene_pooling else 1
        self.scene_embedding_size = widen * self.timestamp_embedding_size
        self.min_samples = min_samples(self.frontend.config)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.frontend.window.device

    def frame_timestamps(self, num_frames: int) -> torch.Tensor:
        """(num_frames,) float32 ms: 20 i + 5 (see :func:`hear_embed.frontend.encoder_frame_times_ms`)."""
        return encoder_frame_times_ms(num_frames, self.frontend.config).float()


def load_model(model_file_path: str = "", **options) -> HearEmbedModel:
    """HEAR API: weights from ``model_file_path`` ("" = the authors' released weights; "tiny", "random" or a
    checkpoint file, see ``hear_embed.weights``); ``options``: see :class:`EmbeddingOptions`."""
    from hear_embed.weights import load_acoustic_model

    acoustic_model, info = load_acoustic_model(model_file_path or None)
    return HearEmbedModel(acoustic_model, weights_info=info, **options)


def _check_model(model) -> None:
    if not isinstance(model, HearEmbedModel):
        raise TypeError(f"model must be what hear_embed.load_model() returns (a HearEmbedModel), "
                        f"got {type(model).__name__}")


def _check_length(num_samples: int, model: HearEmbedModel) -> None:
    if num_samples < model.min_samples:
        raise ValueError(f"audio is {num_samples} samples long; at least {model.min_samples} samples "
                         f"({1000 * model.min_samples / model.sample_rate:.1f} ms at {model.sample_rate} Hz) "
                         "are needed")


def check_audio(audio, model, *, check_finite: bool = True) -> torch.Tensor:
    """Validate a HEAR API batch (n_sounds, n_samples) float32 for ``model`` (anything with ``sample_rate`` and
    ``min_samples``: the baselines use this too), returning the audio as a tensor. ``check_finite=False`` leaves
    NaN and Inf to the caller (hear_embed's first pass over the samples, :func:`hear_embed.long_audio.summarize`,
    finds them without another copy of the audio)."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(audio)
    if not isinstance(audio, torch.Tensor):
        raise ValueError("audio must be a torch.Tensor or numpy.ndarray of shape (n_sounds, n_samples), "
                         f"got {type(audio).__name__}")
    if audio.dim() != 2:
        raise ValueError(f"audio must have shape (n_sounds, n_samples), "
                         f"got {audio.dim()} dimension(s) {tuple(audio.shape)}")
    if audio.dtype != torch.float32:
        raise ValueError(f"audio must be float32 samples at {model.sample_rate} Hz, got dtype {audio.dtype}")
    if audio.shape[0] == 0:
        raise ValueError("audio is an empty batch: shape (0, n_samples)")
    _check_length(audio.shape[1], model)
    if check_finite and not bool(torch.isfinite(audio).all()):
        bad = torch.nonzero(~torch.isfinite(audio).all(dim=1)).flatten().tolist()
        raise ValueError(f"audio contains NaN or Inf in clip(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}")
    return audio


def check_summary(summary: SourceSummary, model: HearEmbedModel) -> None:
    """Raise ValueError if the audio a first pass summarized is too short or holds NaN or Inf."""
    _check_length(summary.num_samples, model)
    if not bool(summary.finite.all()):
        bad = torch.nonzero(~summary.finite).flatten().tolist()
        raise ValueError(f"audio contains NaN or Inf in clip(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}")


def timestamp_embeddings_of_blocks(source: BlockSource, model: HearEmbedModel,
                                   out_device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`get_timestamp_embeddings` of audio given as a block source (see :mod:`hear_embed.long_audio`): a
    callable returning the (n_sounds, n_i) float32 16 kHz blocks of the clips, the same on each call; it is
    called once per pass, so memory holds a few blocks and the output, never the whole audio.
    Returns embeddings (n, T, D) and timestamps (n, T) ms on ``out_device`` (default the model's)."""
    _check_model(model)
    summary = summarize(source, device=model.device)
    check_summary(summary, model)
    hidden = acoustic_hidden(model.frontend, model.acoustic_model, source, summary, num_layers=model.options.layer,
                             windows_per_group=model.options.windows_per_group)
    frames = encoder_frame_count(summary.num_samples, model.frontend.config.hop_length)
    timestamps = model.frame_timestamps(frames).repeat(hidden.shape[0], 1)
    out_device = model.device if out_device is None else out_device
    return hidden.to(out_device), timestamps.to(out_device)


def get_timestamp_embeddings(audio, model: HearEmbedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) float32 at 16 kHz -> embeddings (n, T, D) float32 and timestamps (n, T) in ms,
    on the audio's device."""
    _check_model(model)
    audio = check_audio(audio, model, check_finite=False)
    return timestamp_embeddings_of_blocks(tensor_blocks(audio.to(model.device)), model, out_device=audio.device)


def get_scene_embeddings(audio, model: HearEmbedModel) -> torch.Tensor:
    """audio (n_sounds, n_samples) float32 at 16 kHz -> (n, scene_embedding_size): timestamp embeddings pooled
    over time as ``scene_pooling`` says (mean and std, concatenated, by default)."""
    frames, _ = get_timestamp_embeddings(audio, model)
    return pool_frames(frames, model.options.scene_pooling)
