"""Precision study: embedding-level effect of int8 / bf16 / fp16 and of the plain attention path on hear_embed,
against the fp32 fast path (same random weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hear_embed.acoustic_model import AcousticModel
from hear_embed.api import HearEmbedModel
from hear_embed.attention import set_attention_path
from hear_embed.config import AcousticModelConfig
from eval.bench.candidates import SAMPLE_RATE, TINY_ACOUSTIC, seeded


def load_audio(paths: list[str], seconds: float) -> torch.Tensor:
    """(1, samples) at 16 kHz: the files concatenated (resampled with soxr), repeated or cut to ``seconds``."""
    import soundfile
    import soxr

    pieces = []
    for path in paths:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        pieces.append(soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32))
    audio = np.concatenate(pieces)
    target = int(seconds * SAMPLE_RATE)
    return torch.from_numpy(np.resize(audio, target))[None]


def precision_effects(tiny: bool, export_dir: Path | None, waveform: torch.Tensor) -> pd.DataFrame:
    """Embedding-level effect of int8 / bf16 / fp16 and of the plain path, against the fp32 fast path
    (same random weights): max abs error (also relative to the largest output) and cosine per frame."""
    from hear_embed.export import load_onnx, quantize_torch_int8

    config = TINY_ACOUSTIC if tiny else AcousticModelConfig()
    model = seeded(lambda: AcousticModel(config))
    frontend = HearEmbedModel(model).frontend
    with torch.no_grad():
        log_mel = frontend(waveform)
        reference = model(log_mel)[0]
        variants = {"plain path fp32": lambda: set_attention_path(seeded(lambda: AcousticModel(config)), "plain")(log_mel)[0],
                    "int8 torch.ao": lambda: quantize_torch_int8(model)(log_mel)[0]}
        if export_dir is not None:
            variants["int8 onnxruntime"] = lambda: torch.from_numpy(load_onnx(export_dir, int8=True)(waveform.numpy()))

        def autocast_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(log_mel)[0]
        variants["bf16 autocast"] = autocast_bf16
        for dtype in (torch.bfloat16, torch.float16):
            variants[f"{str(dtype).split('.')[-1]} weights+inputs"] = (
                lambda dtype=dtype: seeded(lambda: AcousticModel(config)).to(dtype)(log_mel.to(dtype))[0])
        rows = []
        for name, compute in variants.items():
            out = compute().float()
            cosine = torch.nn.functional.cosine_similarity(out, reference, dim=-1)
            error = float((out - reference).abs().max())
            rows.append({"variant": name, "max_abs_err": error, "rel_max_err": error / float(reference.abs().max()),
                         "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())})
    return pd.DataFrame(rows)

