"""The benchmark's files: ``OUT.csv`` (the table) and ``OUT.md`` (provenance header, method, table, notes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.provenance import markdown_header
from hear_embed.atomic_files import write_text_atomically

METHOD = ("RTF = median seconds per call / clip seconds (lower is faster); ratio = RTF / wav2vec2-base's RTF at "
          "the same threads and clip length. GMACs = torch.utils.flop_counter.FlopCounterMode total / 2 on the "
          "10 s clip (torch's counter, not the tool behind the paper's numbers); empty for runtimes it cannot see "
          "(int8, ONNX Runtime: same graph as fp32). peak_rss_mb: max RSS of a fresh process that builds the "
          "model and embeds the longest clip on one thread, minus its RSS after imports. load_1min: "
          "os.getloadavg()[0] during the timing (timings under load are noisy; rerun on a quiet machine). "
          "Baselines (eval.baselines.*) are timed through their HEAR get_timestamp_embeddings, fbank included, "
          "with random weights.")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table; floats with 4 significant digits, missing values blank."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_results(table: pd.DataFrame, out: Path, command: str, extra_markdown: str = "") -> tuple[Path, Path]:
    """``out``.csv (the table) and ``out``.md (provenance, method, table, ``extra_markdown``)."""
    csv_path, md_path = out.with_suffix(".csv"), out.with_suffix(".md")
    write_text_atomically(csv_path, table.to_csv(index=False, float_format="%.4g"))
    lines = ["# Efficiency", "", *markdown_header(command), "", METHOD, "", markdown_table(table), ""]
    write_text_atomically(md_path, "\n".join(lines) + "\n" + extra_markdown)
    return csv_path, md_path
