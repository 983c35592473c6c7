"""HuBERT through ``transformers`` as a HEAR module; everything is in ``eval.baselines.speech_transformers``."""
from __future__ import annotations

from eval.baselines import speech_transformers
from eval.baselines.speech_transformers import get_scene_embeddings, get_timestamp_embeddings  # noqa: F401


def load_model(model_file_path: str = "", **options) -> speech_transformers.SpeechTransformerModel:
    """HEAR API: a save_pretrained folder, a hub id (online only), "" (the base model's hub id) or "random"."""
    return speech_transformers.load_model_of("hubert", model_file_path, **options)
