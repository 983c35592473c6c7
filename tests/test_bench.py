"""The efficiency benchmark's code path on tiny configs, one repeat: table structure, files, no network.
No timing assertions (the machine is shared)."""
from __future__ import annotations

import socket

import pandas as pd
import pytest

pytest.importorskip("transformers", reason="the baselines extra is not installed")

from eval import bench  # noqa: E402

MODELS = ["hear_embed fast", "hear_embed plain", "hear_embed int8 (torch.ao)", "hear_embed classifier-50",
          "wav2vec2-base", "hubert-base", "ast-base (ViT)"]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the benchmark tried to open a network connection: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_benchmark_table_and_files(no_network, tmp_path):
    candidates = bench.build_candidates(tiny=True, export_dir=None)
    assert [c.name for c in candidates] == MODELS
    table = bench.benchmark(candidates, thread_counts=[1], durations=[1.0, 2.0], repeats=1,
                            memory=lambda name: 1.0 if name == "hear_embed fast" else None)
    assert list(table.columns) == bench.COLUMNS
    assert len(table) == len(MODELS) * 2
    assert (table["rtf_median"] > 0).all() and (table["rtf_min"] <= table["rtf_median"]).all()
    assert (table.loc[table["model"] == "wav2vec2-base", "ratio_to_wav2vec2"] == 1.0).all()
    macs = table.drop_duplicates("model").set_index("model")["gmacs_10s"]
    assert macs["hear_embed fast"] > 0 and macs["wav2vec2-base"] > 0
    assert pd.isna(macs["hear_embed int8 (torch.ao)"])  # the flop counter cannot see quantized kernels
    assert table.loc[table["model"] == "hear_embed fast", "peak_rss_mb"].eq(1.0).all()

    csv_path, md_path = bench.write_results(table, tmp_path / "efficiency", command="python -m eval.bench --tiny")
    assert pd.read_csv(csv_path).shape == table.shape
    text = md_path.read_text()
    for expected in ["python -m eval.bench --tiny", "torch", "cores", "| model | threads | clip_s |",
                     "| wav2vec2-base | 1 | 1 |"]:
        assert expected in text


def test_memory_probe_and_cli(tmp_path, capsys):
    code = bench.main(["--tiny", "--no-onnx", "--threads", "1", "--durations", "1", "--repeats", "1",
                       "--models", "hear_embed fast", "wav2vec2-base", "--out", str(tmp_path / "eff")])
    assert code == 0
    table = pd.read_csv(tmp_path / "eff.csv")
    assert list(table["model"]) == ["hear_embed fast", "wav2vec2-base"]
    assert (table["peak_rss_mb"] >= 0).all()  # measured by a subprocess per model
    assert "wrote" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        bench.build_candidates(tiny=True, names=["nope"])
