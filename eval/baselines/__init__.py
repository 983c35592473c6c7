"""Baselines run through the same pipeline as hear_embed, and published reference scores (``published.csv``).

HEAR modules: ``logmel`` (no weights), ``wav2vec2``, ``hubert``, ``wavlm``, ``data2vec_audio``, ``ast``,
``beats``, ``audiomae`` (see README, "Baselines", for their weights). Shared code: ``common`` (HEAR functions,
windows, checks), ``fbank`` (Kaldi fbank), ``pretrained`` (transformers loading).
"""
from pathlib import Path

PUBLISHED_CSV = Path(__file__).with_name("published.csv")

# module -> its row name in ``eval bench`` tables (random weights, base size)
BENCH_NAMES = {"eval.baselines.wav2vec2": "wav2vec2-base", "eval.baselines.hubert": "hubert-base",
               "eval.baselines.wavlm": "wavlm-base", "eval.baselines.data2vec_audio": "data2vec-audio-base",
               "eval.baselines.ast": "ast-base", "eval.baselines.beats": "beats-iter3",
               "eval.baselines.audiomae": "audiomae-base"}
