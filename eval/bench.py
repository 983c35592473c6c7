"""Efficiency benchmark: real-time factor, parameters, GMACs and peak memory, side by side.

hear_embed (waveform -> Acoustic Model frames through the HEAR API, fast and plain attention, torch.ao int8,
ONNX Runtime fp32 and int8, and the 50-class fine-tuning classifier) against wav2vec2-base, HuBERT-base and
an AST-base-size ViT built from ``transformers`` configs with random weights (architecture only, nothing is
downloaded: the Hugging Face hub is switched offline before ``transformers`` is imported).

Timing: one process; per thread count and clip length, one warm-up call per model, then ``--repeats`` rounds
that call every model once in turn (interleaved, so a burst of load hits all models alike); RTF is the
median seconds per call divided by the clip length. GMACs: ``torch.utils.flop_counter.FlopCounterMode``
total / 2 on the 10 s clip (torch's counter; other tools count differently). Peak memory: the growth of
the max RSS of a fresh subprocess that builds the model and embeds the longest clip on one thread.

    python -m eval.bench --out results/efficiency   # writes results/efficiency.md and .csv
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # architecture only: never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hear_embed.acoustic_model import AcousticModel  # noqa: E402
from hear_embed.api import HearEmbedModel, get_timestamp_embeddings  # noqa: E402
from hear_embed.attention import set_attention_path  # noqa: E402
from hear_embed.config import (AcousticModelConfig, ClassificationDecoderConfig, TaskModelConfig,  # noqa: E402
                               config_to_dict)
from hear_embed.heads import HEARClassifier  # noqa: E402
from eval.report import cpu_model  # noqa: E402

SAMPLE_RATE = 16000
REFERENCE = "wav2vec2-base"
TINY_ACOUSTIC = AcousticModelConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                    num_transformer_layers=1, max_length=50, overlap=10)
COLUMNS = ["model", "threads", "clip_s", "rtf_median", "rtf_min", "ratio_to_wav2vec2", "params_M", "gmacs_10s",
           "peak_rss_mb", "load_1min", "repeats", "note"]


@dataclass
class Candidate:
    """A model under test: ``call(waveform (1, samples))`` runs it; ``set_threads`` for non-torch runtimes."""

    name: str
    call: Callable[[torch.Tensor], object]
    parameters: int
    countable: bool = True  # FlopCounterMode sees its work (torch fp32 ops)
    note: str = ""
    set_threads: Callable[[int], None] | None = None


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def _hear_builders(tiny: bool, export_dir: Path | None) -> dict[str, Callable[[], Candidate]]:
    from hear_embed.export import export_model, load_onnx, quantize_torch_int8

    config = TINY_ACOUSTIC if tiny else AcousticModelConfig()
    params = _count(AcousticModel(config))

    def acoustic(path: str = "fast") -> AcousticModel:
        return set_attention_path(_seeded(lambda: AcousticModel(config)), path)

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
        model = _seeded(lambda: HEARClassifier(config, task, decoder))
        chunk = int(task.max_length / 50 * SAMPLE_RATE)  # the TaskModel's position table: 1500 frames = 30 s

        def classify(waveform: torch.Tensor):
            samples = waveform.shape[-1]
            if samples <= chunk:
                return model(waveform)
            count = -(-samples // chunk)
            chunks = torch.nn.functional.pad(waveform, (0, count * chunk - samples)).view(count, chunk)
            return model(chunks, (samples - torch.arange(count) * chunk).clamp(max=chunk))
        return Candidate("hear_embed classifier-50", classify, _count(model),
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


def _transformers_builders(tiny: bool) -> dict[str, Callable[[], Candidate]]:
    import transformers

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64) if tiny else {}
    conv = dict(conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_feat_extract_layers=2,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2) if tiny else {}

    def speech(name: str, model_cls, config_cls) -> Candidate:
        model = _seeded(lambda: model_cls(config_cls(**small, **conv)))
        return Candidate(name, lambda x: model(x), _count(model), note="random weights")

    def ast() -> Candidate:
        config = transformers.ASTConfig(**small, **(dict(max_length=128, num_mel_bins=32) if tiny else {}))
        model = _seeded(lambda: transformers.ASTModel(config))

        def run_ast(waveform: torch.Tensor):
            # fbank frames at 100 per second in chunks of max_length frames (10.24 s), batched; the fbank
            # itself is not timed (a small share of the cost)
            chunks = max(1, int(np.ceil(waveform.shape[-1] / SAMPLE_RATE * 100 / config.max_length)))
            return model(torch.zeros(chunks, config.max_length, config.num_mel_bins))
        return Candidate("ast-base (ViT)", run_ast, _count(model),
                         note=f"random weights; {config.max_length}-frame chunks batched; fbank not timed")

    return {
        "wav2vec2-base": lambda: speech("wav2vec2-base", transformers.Wav2Vec2Model, transformers.Wav2Vec2Config),
        "hubert-base": lambda: speech("hubert-base", transformers.HubertModel, transformers.HubertConfig),
        "ast-base (ViT)": ast,
    }


def build_candidates(tiny: bool = False, export_dir: Path | None = None, names: list[str] | None = None) -> list[Candidate]:
    """The models to compare (all, or those named), each built only if selected."""
    builders = {**_hear_builders(tiny, export_dir), **_transformers_builders(tiny)}
    unknown = sorted(set(names or []) - set(builders))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {list(builders)}")
    return [build() for name, build in builders.items() if not names or name in names]


def gmacs(candidate: Candidate, waveform: torch.Tensor) -> float | None:
    """Multiply-accumulates (torch's flop counter / 2) of one call, in billions."""
    if not candidate.countable:
        return None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        candidate.call(waveform)
    return counter.get_total_flops() / 2 / 1e9


def _clip(seconds: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seconds * 1000))
    return 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), generator=generator)


def time_models(candidates: list[Candidate], threads: int, seconds: float, repeats: int) -> list[dict]:
    """Interleaved timing on ``threads`` threads: one row per model."""
    torch.set_num_threads(threads)
    for candidate in candidates:
        if candidate.set_threads is not None:
            candidate.set_threads(threads)
    waveform = _clip(seconds)
    print(f"timing {len(candidates)} models: {threads} thread(s), {seconds:g} s clip, {repeats} repeat(s)",
          file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    loads: dict[str, list[float]] = {c.name: [] for c in candidates}
    with torch.no_grad():
        for candidate in candidates:  # warm-up
            candidate.call(waveform)
        for _ in range(repeats):
            for candidate in candidates:
                start = time.perf_counter()
                candidate.call(waveform)
                times[candidate.name].append(time.perf_counter() - start)
                loads[candidate.name].append(os.getloadavg()[0])
    return [{"model": c.name, "threads": threads, "clip_s": seconds,
             "rtf_median": statistics.median(times[c.name]) / seconds, "rtf_min": min(times[c.name]) / seconds,
             "load_1min": statistics.mean(loads[c.name]), "repeats": repeats, "note": c.note} for c in candidates]


def _peak_rss_mb(name: str, tiny: bool, export_dir: Path | None, seconds: float) -> float | None:
    """Max RSS minus the RSS after imports (MB) of a fresh process that builds ``name`` and embeds a ``seconds`` clip on one thread."""
    command = [sys.executable, "-m", "eval.bench", "--memory-probe", name, "--durations", str(seconds)]
    command += ["--tiny"] if tiny else []
    command += ["--export-dir", str(export_dir)] if export_dir is not None else ["--no-onnx"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        print(f"memory probe of {name} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status: peak memory is measured on Linux only")


def _memory_probe(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    before = _status_kb("VmRSS")
    candidate = build_candidates(args.tiny, _export_dir(args), [args.memory_probe])[0]
    if candidate.set_threads is not None:
        candidate.set_threads(1)
    with torch.no_grad():
        candidate.call(_clip(max(args.durations)))
    after = _status_kb("VmHWM")  # not ru_maxrss: that one inherits the forking parent's peak
    print(json.dumps({"peak_rss_mb": (after - before) / 1024}))
    return 0


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
    model = _seeded(lambda: AcousticModel(config))
    frontend = HearEmbedModel(model).frontend
    with torch.no_grad():
        log_mel = frontend(waveform)
        reference = model(log_mel)[0]
        variants = {"plain path fp32": lambda: set_attention_path(_seeded(lambda: AcousticModel(config)), "plain")(log_mel)[0],
                    "int8 torch.ao": lambda: quantize_torch_int8(model)(log_mel)[0]}
        if export_dir is not None:
            variants["int8 onnxruntime"] = lambda: torch.from_numpy(load_onnx(export_dir, int8=True)(waveform.numpy()))

        def autocast_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(log_mel)[0]
        variants["bf16 autocast"] = autocast_bf16
        for dtype in (torch.bfloat16, torch.float16):
            variants[f"{str(dtype).split('.')[-1]} weights+inputs"] = (
                lambda dtype=dtype: _seeded(lambda: AcousticModel(config)).to(dtype)(log_mel.to(dtype))[0])
        rows = []
        for name, compute in variants.items():
            out = compute().float()
            cosine = torch.nn.functional.cosine_similarity(out, reference, dim=-1)
            error = float((out - reference).abs().max())
            rows.append({"variant": name, "max_abs_err": error, "rel_max_err": error / float(reference.abs().max()),
                         "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())})
    return pd.DataFrame(rows)


def machine() -> dict:
    cpu = cpu_model()
    versions = {"torch": torch.__version__}
    for package in ("onnxruntime", "transformers"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **versions}


def benchmark(candidates: list[Candidate], thread_counts: list[int], durations: list[float], repeats: int,
              memory: Callable[[str], float | None] | None = None) -> pd.DataFrame:
    """The results table (one row per model, thread count and clip length; columns ``COLUMNS``)."""
    rows = []
    for threads in thread_counts:
        for seconds in durations:
            rows += time_models(candidates, threads, seconds, repeats)
    table = pd.DataFrame(rows)
    torch.set_num_threads(thread_counts[0])
    ten_seconds = _clip(10.0)
    table["params_M"] = table["model"].map({c.name: c.parameters / 1e6 for c in candidates})
    table["gmacs_10s"] = table["model"].map({c.name: gmacs(c, ten_seconds) for c in candidates})
    table["peak_rss_mb"] = table["model"].map({c.name: memory(c.name) for c in candidates} if memory else {})
    reference = table[table["model"] == REFERENCE].set_index(["threads", "clip_s"])["rtf_median"]
    keys = list(zip(table["threads"], table["clip_s"]))
    table["ratio_to_wav2vec2"] = [row / reference.get(key, np.nan) for row, key in zip(table["rtf_median"], keys)]
    return table[COLUMNS]


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table; floats with 4 significant digits, missing values blank."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _command() -> str:
    """How this run was started, for the results header."""
    program = Path(sys.argv[0])
    prefix = {"bench.py": "python -m eval.bench", "__main__.py": "python -m eval"}.get(program.name, program.name)
    return " ".join([prefix, *sys.argv[1:]])


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


def write_results(table: pd.DataFrame, out: Path, command: str, extra_markdown: str = "") -> tuple[Path, Path]:
    """``out``.csv (the table) and ``out``.md (command, date, machine, table, notes)."""
    info = machine()
    csv_path, md_path = out.with_suffix(".csv"), out.with_suffix(".md")
    _atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.4g"))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Efficiency", "",
        f"Command: `{command}`  ", f"Date: {date}  ",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in info.items()) + "  ",
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(timings under load are noisy; rerun on a quiet machine)", "",
        "RTF = median seconds per call / clip seconds (lower is faster); ratio = RTF / wav2vec2-base's RTF at "
        "the same threads and clip length. GMACs = torch.utils.flop_counter.FlopCounterMode total / 2 on the "
        "10 s clip (torch's counter, not the tool behind the paper's numbers); empty for runtimes it cannot see "
        "(int8, ONNX Runtime: same graph as fp32). peak_rss_mb: max RSS of a fresh process that builds the "
        "model and embeds the longest clip on one thread, minus its RSS after imports. load_1min: os.getloadavg()[0] during the timing.", "",
        markdown_table(table), "",
    ]
    _atomic_write_text(md_path, "\n".join(lines) + "\n" + extra_markdown)
    return csv_path, md_path


def _export_dir(args: argparse.Namespace) -> Path | None:
    if args.no_onnx:
        return None
    if args.export_dir:
        return Path(args.export_dir)
    return Path(tempfile.gettempdir()) / f"hear_embed_bench_export{'_tiny' if args.tiny else ''}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/efficiency", help="output path without suffix (.md and .csv)")
    parser.add_argument("--threads", nargs="+", default=["1", "all"], help='thread counts; "all" = os.cpu_count()')
    parser.add_argument("--durations", nargs="+", type=float, default=[10.0, 60.0], help="clip lengths in seconds")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and setting, after a warm-up")
    parser.add_argument("--models", nargs="+", default=None, help="subset of model names (default: all)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs of every model (tests)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    parser.add_argument("--export-dir", default=None, help="ONNX export folder to use or create (default: a temp folder)")
    parser.add_argument("--audio", nargs="+", default=None,
                        help="audio file(s) for the precision table (concatenated, cut to the first duration); "
                             "default: the synthetic noise clip")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.memory_probe:
        return _memory_probe(args)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    thread_counts = [os.cpu_count() or 1 if value == "all" else int(value) for value in args.threads]
    export_dir = _export_dir(args)
    candidates = build_candidates(args.tiny, export_dir, args.models)
    memory = None if args.no_memory else (lambda name: _peak_rss_mb(name, args.tiny, export_dir, max(args.durations)))
    table = benchmark(candidates, list(dict.fromkeys(thread_counts)), args.durations, args.repeats, memory)
    audio = load_audio(args.audio, args.durations[0]) if args.audio else _clip(args.durations[0])
    precision = precision_effects(args.tiny, export_dir, audio)
    notes = ["## Precision: embeddings against the fp32 fast path", "",
             f"Same random-init weights; input: {'the files ' + ', '.join(args.audio) if args.audio else 'the synthetic clip'}"
             f" ({args.durations[0]:g} s).", "", markdown_table(precision), ""]
    csv_path, md_path = write_results(table, Path(args.out), _command(), extra_markdown="\n".join(notes))
    print(precision.to_string(index=False))
    print(table.to_string(index=False))
    print(f"wrote {md_path} and {csv_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
