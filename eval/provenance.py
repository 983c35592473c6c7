"""One provenance header for every report the harness writes: command, date, machine, library versions."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

VERSIONED = ("torch", "transformers", "onnxruntime", "numpy")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """Platform, CPU model and core count (and the GPU when torch sees one)."""
    text = f"{platform.platform()}; {cpu_model()}; {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def versions() -> str:
    """Python and the versions of the libraries already imported (none is imported here)."""
    found = [f"python {platform.python_version()}"]
    found += [f"{name} {sys.modules[name].__version__}" for name in VERSIONED
              if name in sys.modules and hasattr(sys.modules[name], "__version__")]
    return ", ".join(found)


def current_command(prefix: str = "python -m eval") -> str:
    """How this process was started, as a user would type it."""
    program = Path(sys.argv[0]).name
    start = prefix if program in ("__main__.py", "-m") else program
    return " ".join([start, *sys.argv[1:]])


def provenance(command: str) -> dict[str, str]:
    """{"command", "date", "machine", "versions"} for a report header."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"command": command, "date": now, "machine": machine_description(), "versions": versions()}


def markdown_header(command: str) -> list[str]:
    """Markdown lines: command, date, machine, versions, 1-minute load average."""
    stamp = provenance(command)
    return [f"- Command: `{stamp['command']}`", f"- Date: {stamp['date']}", f"- Machine: {stamp['machine']}",
            f"- Versions: {stamp['versions']}", f"- Load average (1 min): {os.getloadavg()[0]:.2f}"]
