"""Typed configurations of the HEAR modules; every default is the paper's full size.

Field names and defaults follow the authors' reference (HarunoriKawano/HEAR, ``src/config.py``), so a
config written by their code reads here unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class FrontendConfig:
    """The fixed spectrogram front end shared by every module."""

    sample_rate: int = 16000  # Hz; audio at any other rate is resampled first
    n_fft: int = 1024  # FFT size: 513 frequency bins
    win_length: int = 400  # Hann window, 25 ms
    hop_length: int = 160  # 10 ms between spectrogram frames
    n_mels: int = 128  # HTK-scale mel bands from 0 Hz to sample_rate / 2
    eps: float = 1e-6  # added before the log and to the standard deviation


@dataclass(frozen=True)
class AcousticModelConfig:
    """The Acoustic Model: conv feature extractor + relative-position transformer, sliding window."""

    hidden_size: int = 384  # width of every encoder frame
    intermediate_size: int = 1536  # width of the feed-forward block
    num_attention_heads: int = 4  # heads per attention layer (hidden_size must divide evenly)
    num_transformer_layers: int = 6  # depth of the contextual encoder
    max_length: int = 300  # encoder frames per window (6 s); relative-position tables hold 2x this
    overlap: int = 50  # frames shared by consecutive windows (1 s)
    dropout_probability: float = 0.1  # dropout in attention and feed-forward (training only)
    spectrogram_sampling_rate: int = 16000  # sample rate of the power spectrum fed to the mixture
    spectrogram_n_fft: int = 1024  # FFT size of that power spectrum

    def __post_init__(self) -> None:
        _check_heads(self.hidden_size, self.num_attention_heads)
        if not 0 <= self.overlap < self.max_length:
            raise ValueError(f"overlap must be in [0, max_length={self.max_length}), got {self.overlap}")


@dataclass(frozen=True)
class TokenizerConfig:
    """The Acoustic Tokenizer: an encoder (no sliding window) and a linear layer to code logits."""

    hidden_size: int = 128  # width of every encoder frame
    intermediate_size: int = 512  # width of the feed-forward block
    num_attention_heads: int = 4  # heads per attention layer
    num_transformer_layers: int = 6  # depth of the contextual encoder
    max_length: int = 300  # longest input in encoder frames (6 s); no sliding window
    dropout_probability: float = 0.1  # dropout (training only)
    num_codebooks: int = 1024  # number of discrete codes the tokenizer predicts
    spectrogram_sampling_rate: int = 16000  # kept for config compatibility with the reference
    spectrogram_n_fft: int = 1024  # kept for config compatibility with the reference

    def __post_init__(self) -> None:
        _check_heads(self.hidden_size, self.num_attention_heads)


@dataclass(frozen=True)
class DecoderConfig:
    """The tokenizer-training decoder: reconstructs the log-mel and predicts the teacher's features."""

    hidden_size: int = 128  # width of every decoder frame
    intermediate_size: int = 512  # width of the feed-forward block
    num_attention_heads: int = 4  # heads per attention layer
    num_transformer_layers: int = 2  # depth
    max_length: int = 300  # longest input in frames
    dropout_probability: float = 0.1  # dropout (training only)
    knowledge_hidden_size: int = 768  # width of the teacher's features to predict
    code_vector_size: int = 32  # width of one codebook vector

    def __post_init__(self) -> None:
        _check_heads(self.hidden_size, self.num_attention_heads)


@dataclass(frozen=True)
class TaskModelConfig:
    """The fine-tuning TaskModel: learned absolute positions + one standard transformer layer."""

    hidden_size: int = 384  # width of every frame
    intermediate_size: int = 1536  # width of the feed-forward block
    num_transformer_layers: int = 1  # the reference builds exactly one layer
    num_attention_heads: int = 4  # heads of the attention layer
    dropout_rate: float = 0.1  # dropout (training only)
    max_length: int = 1500  # rows of the position table: 1500 encoder frames = 30 s

    def __post_init__(self) -> None:
        _check_heads(self.hidden_size, self.num_attention_heads)


@dataclass(frozen=True)
class ClassificationDecoderConfig:
    """The classification head: mean/max/std pooling, Linear, BatchNorm, ReLU, Linear."""

    num_classes: int = 50  # output logits (ESC-50 in the paper)
    hidden_size: int = 384  # width of the hidden layer
    dropout_rate: float = 0.1  # dropout (training only)


def _check_heads(hidden_size: int, num_heads: int) -> None:
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_heads}")


def config_from_dict(cls: type, values: dict):
    """Build config ``cls`` from a dict, naming any unknown field instead of failing deep inside."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**values)


def config_to_dict(config) -> dict:
    return asdict(config)
