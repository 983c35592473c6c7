"""Loading a ``transformers`` audio model: a ``save_pretrained`` folder, a hub id (online only) or random weights.

Used by ``speech_transformers`` (wav2vec2, HuBERT, WavLM, data2vec-audio) and ``ast``. ``transformers`` reads
``model.safetensors``, or ``pytorch_model.bin`` with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Family:
    """One model family: ``transformers`` class names, ``config.json``'s model_type, the default hub id."""

    model_class: str
    config_class: str
    model_type: str  # config.json's "model_type"
    base_id: str


def load_pretrained(family: Family, model_file_path: str) -> tuple[torch.nn.Module, dict]:
    """The ``transformers`` model in eval mode and its feature extractor's settings (``{}`` when none)."""
    import transformers

    model_class = getattr(transformers, family.model_class)
    if model_file_path == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return model_class(getattr(transformers, family.config_class)()).eval(), {}
    source = model_file_path or family.base_id
    folder = Path(source)
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{folder}: no config.json; a save_pretrained folder holds config.json and "
                             "model.safetensors (or pytorch_model.bin)")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != family.model_type:
            raise ValueError(f"{config_file}: model_type is {model_type!r}, this module loads {family.model_type!r}")
        try:
            model = model_class.from_pretrained(folder, local_files_only=True)
        except OSError as error:
            raise ValueError(f"{folder}: cannot load {family.model_class} weights ({error})") from None
        processor = folder / "preprocessor_config.json"
        return model.eval(), json.loads(processor.read_text()) if processor.is_file() else {}
    if folder.suffix or folder.exists() or source.count("/") != 1:
        raise ValueError(f"{source!r} is neither a save_pretrained folder nor a hub id like {family.base_id!r}")
    try:
        model = model_class.from_pretrained(source)
    except OSError as error:
        raise ValueError(
            f"cannot load hub model {source!r} (offline or unknown: {type(error).__name__}). Download config.json, "
            f"model.safetensors (or pytorch_model.bin) and preprocessor_config.json from "
            f"https://huggingface.co/{source} into one folder and pass that folder instead") from None
    try:
        from transformers import AutoFeatureExtractor

        preprocessor = AutoFeatureExtractor.from_pretrained(source).to_dict()
    except OSError:
        preprocessor = {}
    return model.eval(), preprocessor


