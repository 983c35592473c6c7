"""Efficiency benchmark: real-time factor, parameters, GMACs and peak memory, side by side.

hear_embed (fast and plain attention, torch.ao int8, ONNX Runtime fp32 and int8, the 50-class fine-tuning
classifier) against the baseline HEAR modules of ``eval.baselines`` (wav2vec2, HuBERT, WavLM, data2vec-audio,
AST, BEATs, AudioMAE), each built by its own ``load_model("random")`` -- the same objects ``eval run`` embeds
with, random weights, nothing downloaded -- and timed through its HEAR ``get_timestamp_embeddings``.

One concern per module: ``candidates`` (what is measured), ``timing`` (RTF and GMACs), ``memory`` (peak RSS of
a fresh process), ``precision`` (int8 / bf16 / fp16 against fp32), ``results`` (files), ``cli`` (the command).

    python -m eval bench --quick                      # about a minute: 1 thread, 10 s clip, no memory probe
    python -m eval bench --out results/efficiency     # the full table, written where asked
"""
from eval.bench.candidates import COLUMNS, REFERENCE, Candidate, build_candidates  # noqa: F401
from eval.bench.cli import add_arguments, main, run  # noqa: F401
from eval.bench.results import markdown_table, write_results  # noqa: F401
from eval.bench.timing import benchmark, gmacs  # noqa: F401
