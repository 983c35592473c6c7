"""The fine-tuning stack around the Acoustic Model (SpectrogramMixture -> TaskModel -> ClassificationDecoder),
assembled in :class:`HEARClassifier`."""
from __future__ import annotations

import torch
from torch import nn

from hear_embed.acoustic_model import AcousticModel
from hear_embed.config import AcousticModelConfig, ClassificationDecoderConfig, FrontendConfig, TaskModelConfig
from hear_embed.frontend import Frontend, num_frames
from hear_embed.layers import full_lengths, length_mask


class SpectrogramMixture(nn.Module):
    """Fuse Acoustic Model frames with the log power spectrum through a sigmoid gate.

    Two consecutive spectrum frames (10 ms each) are stacked per 20 ms encoder frame, projected, gated
    by the hidden state, normalized and concatenated with it.
    """

    def __init__(self, hidden_size: int, n_freqs: int, out_hidden_size: int):
        super().__init__()
        self.gate_linear = nn.Linear(hidden_size, hidden_size)
        self.spectrum_linear = nn.Linear(2 * n_freqs, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.mixture = nn.Linear(2 * hidden_size, out_hidden_size)

    def forward(self, hidden: torch.Tensor, power_spectrum: torch.Tensor) -> torch.Tensor:
        """hidden (batch, time, hidden), power_spectrum (batch, n_freqs, frames) -> (batch, time, out_hidden)."""
        batch, n_freqs, frames = power_spectrum.shape
        pairs = power_spectrum[:, :, : 2 * (frames // 2)].reshape(batch, n_freqs, frames // 2, 2)
        pairs = pairs.permute(0, 2, 1, 3).reshape(batch, frames // 2, 2 * n_freqs)  # feature index: freq * 2 + k
        gate = torch.sigmoid(self.gate_linear(hidden))
        spectrum = nn.functional.gelu(self.layer_norm(self.spectrum_linear(pairs) * gate))
        return self.mixture(torch.cat([hidden, spectrum], dim=-1))


class TaskModel(nn.Module):
    """Learned absolute positions (``max_length`` rows, 30 s) + one standard transformer encoder layer."""

    def __init__(self, config: TaskModelConfig = TaskModelConfig()):
        super().__init__()
        self.config = config
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, config.hidden_size))
        self.transformer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size, nhead=config.num_attention_heads, dim_feedforward=config.intermediate_size,
            dropout=config.dropout_rate, batch_first=True,
        )

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] > self.config.max_length:
            raise ValueError(f"the TaskModel's position table has {self.config.max_length} rows "
                             f"({self.config.max_length / 50:g} s); got {hidden.shape[1]} frames: crop the clip")
        hidden = hidden + self.pos_embed[:, : hidden.shape[1]]
        return self.transformer(hidden, src_key_padding_mask=~length_mask(lengths, hidden.shape[1]))


def masked_mean_max_std(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch, time, hidden) -> (batch, 3 * hidden): mean, max and (n - 1)-normalized std over valid frames."""
    mask = length_mask(lengths, hidden.shape[1]).unsqueeze(-1)
    count = lengths.view(-1, 1).clamp(min=1).to(hidden.dtype)
    mean = hidden.masked_fill(~mask, 0.0).sum(dim=1) / count
    maximum = hidden.masked_fill(~mask, float("-inf")).max(dim=1).values
    var = ((hidden - mean.unsqueeze(1)) ** 2).masked_fill(~mask, 0.0).sum(dim=1) / (count - 1).clamp(min=1e-5)
    return torch.cat([mean, maximum, torch.sqrt(var + 1e-8)], dim=1)


class ClassificationDecoder(nn.Module):
    """Mean/max/std pooling -> Linear -> BatchNorm -> ReLU -> Dropout -> Linear: class logits."""

    def __init__(self, config: ClassificationDecoderConfig, input_hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(3 * input_hidden_size, config.hidden_size)
        self.batch_norm = nn.BatchNorm1d(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.out = nn.Linear(config.hidden_size, config.num_classes)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean_max_std(hidden, lengths)
        return self.out(self.dropout(torch.relu(self.batch_norm(self.linear(pooled)))))


class HEARClassifier(nn.Module):
    """The paper's fine-tuning model: waveform -> Acoustic Model -> SpectrogramMixture -> TaskModel -> logits."""

    def __init__(self, acoustic: AcousticModelConfig = AcousticModelConfig(), task: TaskModelConfig = TaskModelConfig(),
                 decoder: ClassificationDecoderConfig = ClassificationDecoderConfig()):
        super().__init__()
        self.frontend = Frontend(FrontendConfig(sample_rate=acoustic.spectrogram_sampling_rate, n_fft=acoustic.spectrogram_n_fft))
        self.acoustic_model = AcousticModel(acoustic)
        self.spectrogram_mixture = SpectrogramMixture(acoustic.hidden_size, acoustic.spectrogram_n_fft // 2 + 1, task.hidden_size)
        self.task_model = TaskModel(task)
        self.decoder = ClassificationDecoder(decoder, task.hidden_size)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """waveform (batch, samples) or (batch, channels, samples), lengths (batch,) valid samples -> (batch, num_classes)."""
        lengths = full_lengths(waveform) if lengths is None else lengths
        log_mel, power = self.frontend(waveform, with_power=True)
        hidden, frame_lengths = self.acoustic_model(log_mel, num_frames(lengths, self.frontend.config.hop_length))
        hidden = self.spectrogram_mixture(hidden, power)
        hidden = self.task_model(hidden, frame_lengths)
        return self.decoder(hidden, frame_lengths)
