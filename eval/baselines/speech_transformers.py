"""wav2vec 2.0, HuBERT, WavLM and data2vec-audio through ``transformers``, behind the HEAR API.

The four differ only in their model and config classes (:data:`FAMILIES`); ``eval.baselines.wav2vec2`` etc. are
thin modules over this one. ``load_model(path)`` takes a folder in the ``save_pretrained`` layout (``config.json``
plus ``model.safetensors`` or ``pytorch_model.bin``; ``transformers`` reads the latter with
``weights_only=True``), a hub id (only when online), ``""`` for the family's base model on the hub, or
``"random"``: the library's default (base) config with seed-0 random weights (architecture checks, benchmarks).

With the default ``layer`` (the last), timestamp embeddings ARE the library's ``last_hidden_state``; ``layer=j``
is ``hidden_states[j]``. Frame i is stamped at the centre of its receptive field in the convolutional feature
encoder: ``(i * stride + (receptive - 1) / 2) / 16`` ms (20 i + 12.5 ms for the base models: stride 320,
receptive field 400 samples). If the folder has a ``preprocessor_config.json`` with ``do_normalize``, each clip is
scaled to zero mean and unit variance first, as the library's feature extractor does. Clips longer than 20 s are
encoded in 20 s windows every 18 s (``eval.baselines.common``).
"""
from __future__ import annotations

import torch

from eval.baselines import common
from eval.baselines.pretrained import Family, load_pretrained

WINDOW_SECONDS, HOP_SECONDS = 20, 18


FAMILIES = {
    "wav2vec2": Family("Wav2Vec2Model", "Wav2Vec2Config", "wav2vec2", "facebook/wav2vec2-base"),
    "hubert": Family("HubertModel", "HubertConfig", "hubert", "facebook/hubert-base-ls960"),
    "wavlm": Family("WavLMModel", "WavLMConfig", "wavlm", "microsoft/wavlm-base"),
    "data2vec_audio": Family("Data2VecAudioModel", "Data2VecAudioConfig", "data2vec-audio",
                             "facebook/data2vec-audio-base"),
}


def conv_geometry(config) -> tuple[int, int]:
    """(stride, receptive field) in samples of the convolutional feature encoder, from the config."""
    stride, receptive = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride):
        receptive += (kernel - 1) * stride
        stride *= step
    return stride, receptive


class SpeechTransformerModel(common.BaselineModel):
    """A wav2vec2-style ``transformers`` model behind the HEAR API (see the module docstring)."""

    def __init__(self, model, normalize: bool, **options):
        config = model.config
        self.num_layers, self.hidden_size = config.num_hidden_layers, config.hidden_size
        self.stride, self.receptive = conv_geometry(config)
        self.min_samples = self.receptive
        self.window_samples, self.hop_samples = WINDOW_SECONDS * self.sample_rate, HOP_SECONDS * self.sample_rate
        super().__init__(options)
        self.model = model
        self.normalize = normalize
        self.eval()

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """Per-clip zero mean, unit variance (the feature extractor's ``do_normalize``), if the model asks."""
        if not self.normalize:
            return audio
        mean = audio.mean(dim=1, keepdim=True)
        return (audio - mean) / torch.sqrt(audio.var(dim=1, keepdim=True, unbiased=False) + 1e-7)

    def encode(self, audio: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if layer == self.num_layers:
            frames = self.model(audio).last_hidden_state
        else:
            frames = self.model(audio, output_hidden_states=True).hidden_states[layer]
        index = torch.arange(frames.shape[1], dtype=torch.float64)
        return frames, (index * self.stride + (self.receptive - 1) / 2) * 1000.0 / self.sample_rate


def load_model_of(family_name: str, model_file_path: str = "", **options) -> SpeechTransformerModel:
    """HEAR ``load_model`` for one family (see the module docstring)."""
    model, preprocessor = load_pretrained(FAMILIES[family_name], model_file_path)
    return SpeechTransformerModel(model, bool(preprocessor.get("do_normalize", False)), **options)


get_timestamp_embeddings = common.get_timestamp_embeddings
get_scene_embeddings = common.get_scene_embeddings
