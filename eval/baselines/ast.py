"""AST (Gong et al. 2021) through ``transformers`` (``ASTModel``) as a HEAR module.

Input: the feature extractor's features, computed here in plain torch (``eval.baselines.fbank``, Hann window,
no torchaudio): 128-bin Kaldi fbank of the clip, zero-padded (or cut) to ``max_length`` frames (1024 = 10.24 s),
normalised ``(fbank - mean) / (2 * std)`` with the extractor's AudioSet statistics. ``load_model`` takes a
``save_pretrained`` folder (its ``preprocessor_config.json`` supplies mean / std / max_length when present), a hub
id (online only; ``""`` = MIT/ast-finetuned-audioset-10-10-0.4593) or ``"random"`` (default config, seed 0).

Timestamp embeddings: the patch grid is 12 frequency rows x 101 time columns (16 x 16 patches every 10 frames /
10 bins); the frequency rows of each time column are AVERAGED (as for BEATs), the two leading [CLS] / distillation
tokens are dropped, and column j is stamped at the centre of its 16 frames, ``100 j + 87.5`` ms. Only columns
starting inside the clip's real frames are kept. Clips longer than ``max_length`` frames are encoded in windows of
``max_length`` frames every 510 (half of it, rounded down to whole columns so that the column grid stays
aligned: one frame every 100 ms throughout; ``eval.baselines.common``). ``layer`` = last is ``last_hidden_state``
(after the final LayerNorm), ``layer=j`` is ``hidden_states[j]``.
"""
from __future__ import annotations

import torch

from eval.baselines import common
from eval.baselines.fbank import FbankOptions, fbank, frame_centre_ms, num_frames
from eval.baselines.pretrained import Family, load_pretrained

FAMILY = Family("ASTModel", "ASTConfig", "audio-spectrogram-transformer", "MIT/ast-finetuned-audioset-10-10-0.4593")
DEFAULT_MEAN, DEFAULT_STD = -4.2677393, 4.5689974  # ASTFeatureExtractor's AudioSet statistics


class ASTBaseline(common.BaselineModel):
    """``ASTModel`` behind the HEAR API (see the module docstring)."""

    def __init__(self, model, preprocessor: dict, **options):
        config = model.config
        self.num_layers, self.hidden_size = config.num_hidden_layers, config.hidden_size
        self.fbank_options = FbankOptions(window="hanning", htk_compat=True, num_mel_bins=config.num_mel_bins)
        self.max_length = int(preprocessor.get("max_length", config.max_length))
        if self.max_length != config.max_length:
            raise ValueError(f"preprocessor max_length {self.max_length} differs from the model's {config.max_length}")
        self.mean = float(preprocessor.get("mean", DEFAULT_MEAN))
        self.std = float(preprocessor.get("std", DEFAULT_STD))
        self.normalize = bool(preprocessor.get("do_normalize", True))
        self.patch, self.time_stride = config.patch_size, config.time_stride
        self.frequency_rows = (config.num_mel_bins - self.patch) // config.frequency_stride + 1
        self.time_columns = (self.max_length - self.patch) // self.time_stride + 1
        shift, window = self.fbank_options.shift_samples, self.fbank_options.window_samples
        self.min_samples = window
        self.window_samples = window + (self.max_length - 1) * shift
        self.hop_samples = self.max_length // 2 // self.time_stride * self.time_stride * shift  # grid-aligned
        super().__init__(options)
        self.model = model
        self.eval()

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(n, samples <= window_samples) -> (n, max_length, num_mel_bins) normalised, zero-padded fbank."""
        bank = fbank(audio, self.fbank_options)[:, :self.max_length]
        bank = torch.nn.functional.pad(bank, (0, 0, 0, self.max_length - bank.shape[1]))
        return (bank - self.mean) / (2 * self.std) if self.normalize else bank

    def encode(self, audio: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.features(audio)
        if layer == self.num_layers:
            tokens = self.model(inputs).last_hidden_state
        else:
            tokens = self.model(inputs, output_hidden_states=True).hidden_states[layer]
        grid = tokens[:, 2:].reshape(len(audio), self.frequency_rows, self.time_columns, -1)  # frequency-major
        real = num_frames(audio.shape[1], self.fbank_options)
        columns = min(self.time_columns, -(-real // self.time_stride))  # columns that start inside the clip
        centres = torch.arange(columns, dtype=torch.float64) * self.time_stride + (self.patch - 1) / 2
        return grid[:, :, :columns].mean(dim=1), frame_centre_ms(centres, self.fbank_options)


def load_model(model_file_path: str = "", **options) -> ASTBaseline:
    """HEAR API: a save_pretrained folder, a hub id (online only), "" (the AudioSet-finetuned AST) or "random"."""
    model, preprocessor = load_pretrained(FAMILY, model_file_path)
    return ASTBaseline(model, preprocessor, **options)


get_timestamp_embeddings = common.get_timestamp_embeddings
get_scene_embeddings = common.get_scene_embeddings
