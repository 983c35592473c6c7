"""Peak memory: the growth of the max RSS of a fresh process that builds one model and embeds one clip on one
thread (``python -m eval.bench --memory-probe NAME``; Linux only)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status: peak memory is measured on Linux only")


def peak_rss_mb(name: str, tiny: bool, export_dir: Path | None, seconds: float) -> float | None:
    """Max RSS minus the RSS after imports (MB) of a fresh process that builds ``name`` and embeds a ``seconds`` clip."""
    command = [sys.executable, "-m", "eval.bench", "--memory-probe", name, "--durations", str(seconds)]
    command += ["--tiny"] if tiny else []
    command += ["--export-dir", str(export_dir)] if export_dir is not None else ["--no-onnx"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if result.returncode != 0:
        print(f"memory probe of {name} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def memory_probe(name: str, tiny: bool, export_dir: Path | None, seconds: float) -> int:
    """The probe process's body: build, embed, print {"peak_rss_mb": ...} as JSON."""
    from eval.bench.candidates import build_candidates
    from eval.bench.timing import clip

    torch.set_num_threads(1)
    before = _status_kb("VmRSS")
    candidate = build_candidates(tiny, export_dir, [name])[0]
    if candidate.set_threads is not None:
        candidate.set_threads(1)
    with torch.no_grad():
        candidate.call(clip(seconds))
    after = _status_kb("VmHWM")  # not ru_maxrss: that one inherits the forking parent's peak
    print(json.dumps({"peak_rss_mb": (after - before) / 1024}))
    return 0
