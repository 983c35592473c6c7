"""Export the Frontend + Acoustic Model for deployment: ONNX (optionally int8), torch.export programs.

An export folder holds two graphs, both with dynamic batch and length:

- ``frontend``: waveform (batch, samples) float32 at 16 kHz -> normalized log-mel (batch, 128, frames). It
  includes DC removal, the STFT and the per-clip mean/std normalization over the whole clip.
- ``encoder``: one window of log-mel (windows, 128, 2 * t) with t <= max_length encoder frames and its valid
  mel frames (windows,) int64 -> hidden (windows, t, hidden_size): conv feature extractor + transformer.

The sliding window between them is the Acoustic Model's own :class:`~hear_embed.windowing.WindowPlan` and
:class:`~hear_embed.windowing.OverlapAdd`, run by :class:`ExportedEmbedder`; its parameters are
``max_length`` and ``overlap`` of ``acoustic_model_config`` in ``export.json``.

Files: ``frontend.onnx``, ``encoder.onnx``, ``encoder.int8.onnx`` (``--int8``: onnxruntime dynamic int8
quantization of the encoder's weights), ``frontend.pt2``, ``encoder.pt2`` (``--torch-export``, alias
``--torchscript``: ``torch.export`` programs, loadable with ``torch.export.load``), ``export.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hear_embed.acoustic_model import AcousticModel
from hear_embed.atomic_files import atomic_path, write_json_atomically
from hear_embed.config import config_to_dict
from hear_embed.frontend import Frontend, min_samples
from hear_embed.windowing import OverlapAdd, WindowPlan

OPSET = 18
MIN_SAMPLES = min_samples()  # 513 (see hear_embed.frontend.min_samples)

# What torch and onnxruntime print during an export that says nothing about this model: (category, message regex)
# of Python warnings, and the start of log messages with the logger that emits them.
HARMLESS_WARNINGS = (
    (UserWarning, "No complete tensor found in the group"),  # torch.export.save; our weights are on the CPU
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # inside torch.onnx.export
)
HARMLESS_LOGS = {
    "torch.onnx._internal.exporter._registration": "torchvision is not installed",  # we use no torchvision op
    "root": "Please consider to run pre-processing before quantization",  # onnxruntime's advice for CNNs
}


@contextlib.contextmanager
def quiet_harmless_warnings():
    """Silence exactly :data:`HARMLESS_WARNINGS` and :data:`HARMLESS_LOGS` inside the block."""
    filters = [(logging.getLogger(None if name == "root" else name),
                lambda record, start=start: not record.getMessage().startswith(start))
               for name, start in HARMLESS_LOGS.items()]
    with warnings.catch_warnings():
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for logger, log_filter in filters:
            logger.addFilter(log_filter)
        try:
            yield
        finally:
            for logger, log_filter in filters:
                logger.removeFilter(log_filter)


class WindowEncoder(nn.Module):
    """One window: log-mel (windows, n_mels, 2 t), valid mel frames (windows,) -> hidden (windows, t, hidden)."""

    def __init__(self, acoustic_model: AcousticModel):
        super().__init__()
        self.acoustic_model = acoustic_model

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, lengths = self.acoustic_model.feature_extractor(log_mel, lengths)
        return self.acoustic_model.contextual_encoder(hidden, lengths)


def _programs(acoustic_model: AcousticModel) -> dict[str, torch.export.ExportedProgram]:
    """torch.export programs of the frontend and the window encoder with dynamic batch and length."""
    max_length = acoustic_model.config.max_length
    frontend, encoder = Frontend().eval(), WindowEncoder(acoustic_model).eval()
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=MIN_SAMPLES)
    windows, half_frames = torch.export.Dim("windows"), torch.export.Dim("encoder_frames", min=1, max=max_length)
    with torch.no_grad():
        front = torch.export.export(frontend, (torch.randn(2, 16000),),
                                    dynamic_shapes={"waveform": {0: batch, 1: samples}})
        mel = torch.randn(2, frontend.config.n_mels, 2 * max_length)
        enc = torch.export.export(encoder, (mel, torch.tensor([2 * max_length, max_length])),
                                  dynamic_shapes={"log_mel": {0: windows, 2: 2 * half_frames}, "lengths": {0: windows}})
    return {"frontend": front, "encoder": enc}


def quantize_onnx_int8(source: Path, target: Path) -> Path:
    """Dynamic 8-bit quantization of the weight matmuls (activations quantized on the fly) with onnxruntime.

    Weights are unsigned 8-bit: with signed weights (u8s8) x86 CPUs without VNNI saturate in the int8
    kernels, which we measured as per-frame cosine 0.975 to fp32 instead of 0.9998."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(target) as temporary:
        quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QUInt8)
    return target


def quantize_torch_int8(acoustic_model: AcousticModel) -> AcousticModel:
    """A copy of the model whose nn.Linear layers use torch.ao dynamic int8 quantization (CPU only)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao quantization is deprecated in favour of torchao, still works
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch.quantize_per_tensor, torch.quantize_per_channel",
                                category=UserWarning)
        return quantize_dynamic(acoustic_model, {nn.Linear}, dtype=torch.qint8, inplace=False)


def export_model(acoustic_model: AcousticModel, out_dir: str | Path, onnx: bool = True, torch_export: bool = True,
                 int8: bool = False, source: str = "") -> dict[str, Path]:
    """Write the export folder (see the module docstring); returns {artifact name: path}."""
    if int8 and not onnx:
        raise ValueError("--int8 quantizes the ONNX encoder: also pass --onnx")
    if not (onnx or torch_export):
        raise ValueError("nothing to export: pass --onnx and/or --torch-export")
    with quiet_harmless_warnings():
        return _export(acoustic_model, Path(out_dir), onnx, torch_export, int8, source)


def _export(acoustic_model: AcousticModel, out: Path, onnx: bool, torch_export: bool, int8: bool,
            source: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    programs = _programs(acoustic_model.eval())
    written: dict[str, Path] = {}
    for name, program in programs.items():
        if torch_export:
            written[f"{name}.pt2"] = out / f"{name}.pt2"
            with atomic_path(written[f"{name}.pt2"]) as temporary:
                torch.export.save(program, temporary)
        if onnx:
            written[f"{name}.onnx"] = out / f"{name}.onnx"
            onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET, verbose=False)
            with atomic_path(written[f"{name}.onnx"]) as temporary:
                onnx_program.save(temporary)
    if int8:
        written["encoder.int8.onnx"] = quantize_onnx_int8(out / "encoder.onnx", out / "encoder.int8.onnx")
    meta = {
        "source": source, "acoustic_model_config": config_to_dict(acoustic_model.config), "sample_rate": 16000,
        "min_samples": MIN_SAMPLES, "hop_length": Frontend().config.hop_length, "opset": OPSET,
        "files": sorted(written),
        "frontend": "waveform (batch, samples) float32 -> log_mel (batch, 128, frames); frames = samples // 160 + 1",
        "encoder": "log_mel (windows, 128, 2t), lengths (windows,) int64 valid mel frames -> hidden (windows, t, H); t <= max_length",
    }
    written["export.json"] = out / "export.json"
    write_json_atomically(written["export.json"], meta, indent=2)
    return written


class ExportedEmbedder:
    """Runs an export folder: waveform (batch, samples) float32 numpy -> hidden (batch, frames // 2, H).

    ``frontend`` and ``encoder`` are callables on numpy arrays (see :func:`load_onnx`, :func:`load_programs`);
    the windows and their overlap-add are the Acoustic Model's own (:mod:`hear_embed.windowing`)."""

    def __init__(self, frontend, encoder, plan: WindowPlan):
        self.frontend, self.encoder, self.plan = frontend, encoder, plan

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        waveform = np.ascontiguousarray(waveform, dtype=np.float32)
        if waveform.ndim != 2 or waveform.shape[1] < MIN_SAMPLES:
            raise ValueError(f"waveform must be (batch, samples) with at least {MIN_SAMPLES} samples, "
                             f"got shape {waveform.shape}")
        log_mel = self.frontend(waveform)  # (batch, n_mels, frames)
        batch, n_mels, frames = log_mel.shape
        total, length = frames // 2, self.plan.max_length
        if total <= length:  # the encoder takes an even number of mel frames; the conv drops an odd last one
            return self.encoder(np.ascontiguousarray(log_mel[:, :, :2 * total]), np.full(batch, 2 * total, dtype=np.int64))
        starts = self.plan.starts(total)
        lengths = torch.full((batch,), total)
        padded = np.zeros((batch, n_mels, 2 * (int(starts[-1]) + length)), dtype=np.float32)
        padded[:, :, :frames] = log_mel
        windows = np.stack([padded[:, :, 2 * s: 2 * (s + length)] for s in starts.tolist()], axis=1)  # (batch, n, mels, 2L)
        mel_lengths = 2 * self.plan.window_lengths(lengths, starts).numpy()
        encoded = self.encoder(windows.reshape(-1, n_mels, 2 * length), mel_lengths.reshape(-1))
        encoded = torch.from_numpy(np.ascontiguousarray(encoded).reshape(batch, len(starts), length, -1))
        overlap_add = OverlapAdd(self.plan, batch, total, encoded.shape[-1], like=encoded)
        used = self.plan.used(lengths, starts)
        for index, start in enumerate(starts.tolist()):
            overlap_add.add(start, encoded[:, index], used[:, index])
        return overlap_add.result().numpy()


def _read_window_plan(folder: Path) -> WindowPlan:
    """The window plan rebuilt from the parameters in ``folder/export.json``."""
    path = Path(folder) / "export.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a hear-embed export folder")
    config = json.loads(path.read_text())["acoustic_model_config"]
    return WindowPlan(max_length=config["max_length"], overlap=config["overlap"])


def load_onnx(folder: str | Path, int8: bool = False, threads: int = 0) -> ExportedEmbedder:
    """ExportedEmbedder on onnxruntime sessions (``threads`` intra-op threads, 0 = onnxruntime's default)."""
    import onnxruntime

    folder = Path(folder)
    plan = _read_window_plan(folder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    def session(name: str):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found (export with --onnx{' --int8' if 'int8' in name else ''})")
        sess = onnxruntime.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        names = [item.name for item in sess.get_inputs()]
        return lambda *arrays: sess.run(None, dict(zip(names, arrays)))[0]

    return ExportedEmbedder(session("frontend.onnx"), session("encoder.int8.onnx" if int8 else "encoder.onnx"), plan)


def load_programs(folder: str | Path) -> ExportedEmbedder:
    """ExportedEmbedder on the torch.export programs (``frontend.pt2``, ``encoder.pt2``)."""
    folder = Path(folder)
    plan = _read_window_plan(folder)

    def program(name: str):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found (export with --torch-export)")
        module = torch.export.load(str(folder / name)).module()

        @torch.no_grad()
        def call(*arrays):
            return module(*(torch.from_numpy(np.asarray(a)) for a in arrays)).numpy()
        return call

    return ExportedEmbedder(program("frontend.pt2"), program("encoder.pt2"), plan)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help='"authors" (default), "tiny", "random", or a checkpoint path (see hear-embed info)')
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--onnx", action="store_true", help="write frontend.onnx and encoder.onnx")
    parser.add_argument("--torch-export", "--torchscript", dest="torch_export", action="store_true",
                        help="write torch.export programs frontend.pt2 and encoder.pt2")
    parser.add_argument("--int8", action="store_true", help="also write encoder.int8.onnx (dynamic int8, onnxruntime)")


def run(args: argparse.Namespace) -> int:
    from hear_embed.weights import load_acoustic_model

    onnx, torch_export = args.onnx, args.torch_export
    if not (onnx or torch_export):  # neither named: both
        onnx = torch_export = True
    model, info = load_acoustic_model(args.weights)
    written = export_model(model, args.out, onnx=onnx, torch_export=torch_export, int8=args.int8,
                           source=info.source)
    for name, path in written.items():
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
