"""Exported artifacts (ONNX, int8 ONNX, torch.export programs) compute what the PyTorch model computes.

The export folder of the small reference-fixture model is built once per module; every artifact is run
through :class:`ExportedEmbedder` (the documented sliding-window wrapper) on clips from a few hundred
samples to three windows, in batches, and compared with ``AcousticModel(Frontend(audio))``.
"""
from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pytest
import torch

from hear_embed import export
from hear_embed.cli import main as cli_main
from hear_embed.frontend import Frontend
from hear_embed.weights import load_acoustic_model

# samples: 600 (2 encoder frames), 1 s, exactly one window (300 frames), one frame over (2 windows), 3 windows
LENGTHS = [600, 16000, 96000, 96320, 212800]
FP32_TOL = 1e-4

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def small_model(parity_dir):
    return load_acoustic_model(parity_dir / "acoustic_model_small.pth")[0]


class _LogRecords(logging.Handler):
    """Keeps the messages of the records that reach the loggers it is added to."""

    def __init__(self, logger_names):
        super().__init__()
        self.loggers = [logging.getLogger(None if name == "root" else name) for name in logger_names]
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        for logger in self.loggers:
            logger.removeHandler(self)


@pytest.fixture(scope="module")
def export_run(small_model, tmp_path_factory):
    """The export folder, and every warning and log message printed while it was written."""
    out = tmp_path_factory.mktemp("export")
    with _LogRecords(export.HARMLESS_LOGS) as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = export.export_model(small_model, out, onnx=True, torch_export=True, int8=True, source="fixture")
    assert sorted(written) == ["encoder.int8.onnx", "encoder.onnx", "encoder.pt2", "export.json", "frontend.onnx",
                               "frontend.pt2"]
    return out, [str(w.message) for w in caught] + logs.messages


@pytest.fixture(scope="module")
def export_dir(export_run):
    return export_run[0]


def _is_harmless(message: str) -> bool:
    return (any(re.match(pattern, message) for _, pattern in export.HARMLESS_WARNINGS)
            or any(message.startswith(start) for start in export.HARMLESS_LOGS.values()))


def test_export_prints_none_of_the_known_harmless_warnings(export_run):
    _, printed = export_run
    assert [message for message in printed if _is_harmless(message)] == []


def test_only_the_known_warnings_are_silenced():
    logger_name, harmless_log = next(iter(export.HARMLESS_LOGS.items()))
    with _LogRecords([logger_name]) as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with export.quiet_harmless_warnings():
            for category, pattern in export.HARMLESS_WARNINGS:
                warnings.warn(pattern.replace("\\", ""), category)
            warnings.warn("an unrelated warning", UserWarning)
            logging.getLogger(logger_name).warning(harmless_log + ". Skipping torchvision::nms")
            logging.getLogger(logger_name).warning("an unrelated log message")
        logging.getLogger(logger_name).warning(harmless_log + " (after the block)")
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
    assert logs.messages == ["an unrelated log message", harmless_log + " (after the block)"]


def _audio(samples: int, batch: int = 2) -> np.ndarray:
    return (0.1 * np.random.default_rng(samples).standard_normal((batch, samples))).astype(np.float32)


@torch.no_grad()
def _expected(model, audio: np.ndarray) -> np.ndarray:
    return model(Frontend()(torch.from_numpy(audio)))[0].numpy()


@pytest.mark.parametrize("samples", LENGTHS)
@pytest.mark.parametrize("runtime", ["onnx", "torch_export"])
def test_exported_model_matches_pytorch(export_dir, small_model, runtime, samples):
    embedder = export.load_onnx(export_dir) if runtime == "onnx" else export.load_programs(export_dir)
    audio = _audio(samples)
    out, expected = embedder(audio), _expected(small_model, audio)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < FP32_TOL


@pytest.mark.parametrize("samples", [16000, 212800])
def test_int8_onnx_stays_close(export_dir, small_model, samples):
    audio = _audio(samples)
    out, expected = export.load_onnx(export_dir, int8=True)(audio), _expected(small_model, audio)
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(out), torch.from_numpy(expected), dim=-1)
    assert float(cosine.min()) > 0.99
    assert np.abs(out - expected).max() > 1e-6  # it really is a different (quantized) graph


@torch.no_grad()
def test_torch_int8_stays_close(small_model):
    log_mel = Frontend()(torch.from_numpy(_audio(96320)))
    expected = small_model(log_mel)[0]
    out = export.quantize_torch_int8(small_model)(log_mel)[0]
    assert float(torch.nn.functional.cosine_similarity(out, expected, dim=-1).min()) > 0.99
    assert torch.equal(small_model(log_mel)[0], expected)  # the fp32 model is left untouched


def test_wrapper_rejects_bad_audio(export_dir):
    embedder = export.load_onnx(export_dir)
    with pytest.raises(ValueError, match="waveform must be"):
        embedder(np.zeros(16000, dtype=np.float32))
    with pytest.raises(ValueError, match="at least 513 samples"):
        embedder(np.zeros((1, 100), dtype=np.float32))


def test_missing_folder_and_bad_options_are_clear(tmp_path, small_model):
    with pytest.raises(FileNotFoundError, match="export.json"):
        export.load_onnx(tmp_path)
    with pytest.raises(ValueError, match="--int8"):
        export.export_model(small_model, tmp_path, onnx=False, torch_export=True, int8=True)


def test_cli_export_writes_programs(parity_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["export", "--weights", str(parity_dir / "acoustic_model_small.pth"), "--out", str(out),
                     "--torch-export"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["encoder.pt2", "export.json", "frontend.pt2"]
    assert "encoder.pt2" in capsys.readouterr().out
