"""The models under test: hear_embed variants and the baseline HEAR modules, each built only if selected."""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from eval.baselines import BENCH_NAMES
from hear_embed.acoustic_model import AcousticModel
from hear_embed.api import HearEmbedModel, get_timestamp_embeddings
from hear_embed.attention import set_attention_path
from hear_embed.config import AcousticModelConfig, ClassificationDecoderConfig, TaskModelConfig, config_to_dict
from hear_embed.heads import HEARClassifier

SAMPLE_RATE = 16000
REFERENCE = "wav2vec2-base"
TINY_ACOUSTIC = AcousticModelConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                    num_transformer_layers=1, max_length=50, overlap=10)
COLUMNS = ["model", "threads", "clip_s", "rtf_median", "rtf_min", "ratio_to_wav2vec2", "params_M", "gmacs_10s",
           "peak_rss_mb", "load_1min", "repeats", "note"]
# table name -> baseline module under eval.baselines (``load_model("random")``: base size, seed 0)
BASELINES = {name: module.rsplit(".", 1)[1] for module, name in BENCH_NAMES.items()}


@dataclass
class Candidate:
    """A model under test: ``call(waveform (1, samples))`` runs it; ``set_threads`` for non-torch runtimes."""

    name: str
    call: Callable[[torch.Tensor], object]
    parameters: int
    countable: bool = True  # FlopCounterMode sees its work (torch fp32 ops)
    note: str = ""
    set_threads: Callable[[int], None] | None = None


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def _hear_builders(tiny: bool, export_dir: Path | None) -> dict[str, Callable[[], Candidate]]:
    from hear_embed.export import export_model, load_onnx, quantize_torch_int8

    config = TINY_ACOUSTIC if tiny else AcousticModelConfig()
    params = count_parameters(AcousticModel(config))

    def acoustic(path: str = "fast") -> AcousticModel:
        return set_attention_path(seeded(lambda: AcousticModel(config)), path)

    def api(name: str, model: torch.nn.Module, **kwargs) -> Candidate:
        embedder = HearEmbedModel(model)
        return Candidate(name, lambda x: get_timestamp_embeddings(x, embedder), params, **kwargs)

    def onnx(name: str, int8: bool) -> Candidate:
        meta = export_dir / "export.json"
        fresh = meta.is_file() and json.loads(meta.read_text())["acoustic_model_config"] == config_to_dict(config)
        if not (fresh and (export_dir / "encoder.int8.onnx").is_file()):
            export_model(acoustic(), export_dir, onnx=True, torch_export=False, int8=True, source="random")
        holder = {}

        def set_threads(threads: int) -> None:
            holder["embedder"] = load_onnx(export_dir, int8=int8, threads=threads)
        return Candidate(name, lambda x: holder["embedder"](x.numpy()), params, countable=False,
                         note="ORT dynamic int8" if int8 else "ORT fp32", set_threads=set_threads)

    def classifier() -> Candidate:
        task = TaskModelConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2) if tiny else TaskModelConfig()
        decoder = ClassificationDecoderConfig(num_classes=50, hidden_size=16 if tiny else 384)
        model = seeded(lambda: HEARClassifier(config, task, decoder))
        chunk = int(task.max_length / 50 * SAMPLE_RATE)  # the TaskModel's position table: 1500 frames = 30 s

        def classify(waveform: torch.Tensor):
            samples = waveform.shape[-1]
            if samples <= chunk:
                return model(waveform)
            count = -(-samples // chunk)
            chunks = torch.nn.functional.pad(waveform, (0, count * chunk - samples)).view(count, chunk)
            return model(chunks, (samples - torch.arange(count) * chunk).clamp(max=chunk))
        return Candidate("hear_embed classifier-50", classify, count_parameters(model),
                         note="the paper's fine-tuning model; 30 s chunks batched")

    builders = {
        "hear_embed fast": lambda: api("hear_embed fast", acoustic("fast")),
        "hear_embed plain": lambda: api("hear_embed plain", acoustic("plain")),
        "hear_embed int8 (torch.ao)": lambda: api("hear_embed int8 (torch.ao)", quantize_torch_int8(acoustic()),
                                                  countable=False, note="dynamic int8 nn.Linear"),
    }
    if export_dir is not None:
        builders["hear_embed onnxruntime"] = lambda: onnx("hear_embed onnxruntime", int8=False)
        builders["hear_embed onnxruntime int8"] = lambda: onnx("hear_embed onnxruntime int8", int8=True)
    builders["hear_embed classifier-50"] = classifier
    return builders


def _tiny_baseline(module_name: str):
    """A small random model of a baseline module, built like ``load_model`` builds the real one (tests)."""
    import transformers

    from eval.baselines import ast, audiomae, beats, speech_transformers

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if module_name in speech_transformers.FAMILIES:
        family = speech_transformers.FAMILIES[module_name]
        config = getattr(transformers, family.config_class)(
            **small, conv_dim=(32, 32), conv_kernel=(10, 64), conv_stride=(5, 64), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2)
        return speech_transformers.SpeechTransformerModel(getattr(transformers, family.model_class)(config).eval(), False)
    if module_name == "ast":
        return ast.ASTBaseline(transformers.ASTModel(transformers.ASTConfig(**small)).eval(), {})
    if module_name == "beats":
        config = beats.BEATsConfig(embed_dim=32, encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                   encoder_attention_heads=2, conv_pos=16, conv_pos_groups=2)
        return beats.BEATsModel(beats.BEATsEncoder(config).eval())
    return audiomae.AudioMAEModel(audiomae.AudioMAEEncoder(width=64, depth=1, mlp_width=128).eval())


def _baseline_builders(tiny: bool) -> dict[str, Callable[[], Candidate]]:
    def build(name: str, module_name: str) -> Candidate:
        module = importlib.import_module(f"eval.baselines.{module_name}")
        model = seeded(lambda: _tiny_baseline(module_name)) if tiny else module.load_model("random")
        return Candidate(name, lambda x: module.get_timestamp_embeddings(x, model), count_parameters(model),
                         note=f"eval.baselines.{module_name}, random weights")

    return {name: (lambda name=name, module_name=module_name: build(name, module_name))
            for name, module_name in BASELINES.items()}


def build_candidates(tiny: bool = False, export_dir: Path | None = None, names: list[str] | None = None) -> list[Candidate]:
    """The models to compare (all, or those named), each built only if selected; the hub stays offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # architecture only: never reach the hub
    builders = {**_hear_builders(tiny, export_dir), **_baseline_builders(tiny)}
    unknown = sorted(set(names or []) - set(builders))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {list(builders)}")
    return [build() for name, build in builders.items() if not names or name in names]
