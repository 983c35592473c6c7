"""The efficiency benchmark's code path on tiny configs, one repeat: table structure, files, no network.
No timing assertions (the machine is shared)."""
from __future__ import annotations

import socket

import pandas as pd
import pytest

pytest.importorskip("transformers", reason="the baselines extra is not installed")

from eval import bench  # noqa: E402

MODELS = ["hear_embed fast", "hear_embed plain", "hear_embed int8 (torch.ao)", "hear_embed classifier-50",
          "wav2vec2-base", "hubert-base", "wavlm-base", "data2vec-audio-base", "ast-base", "beats-iter3",
          "audiomae-base"]


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
    assert (macs.drop("hear_embed int8 (torch.ao)") > 0).all()  # every baseline is counted, fbank included
    assert pd.isna(macs["hear_embed int8 (torch.ao)"])  # the flop counter cannot see quantized kernels
    assert table.loc[table["model"] == "hear_embed fast", "peak_rss_mb"].eq(1.0).all()

    csv_path, md_path = bench.write_results(table, tmp_path / "efficiency", command="python -m eval.bench --tiny")
    assert pd.read_csv(csv_path).shape == table.shape
    text = md_path.read_text()
    for expected in ["python -m eval.bench --tiny", "torch", "cores", "Versions: python", "| model | threads | clip_s |",
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


def test_baselines_are_the_hear_modules_themselves():
    """Bench measures the same objects ``eval run`` embeds with: ``load_model("random")`` of each module."""
    from eval.baselines import beats

    candidate = bench.build_candidates(names=["beats-iter3"])[0]
    assert candidate.parameters == sum(p.numel() for p in beats.load_model("random").parameters())
    assert 90e6 < candidate.parameters < 91e6


def test_default_output_is_untracked_and_quick_mode_is_small(monkeypatch):
    import argparse

    from eval.bench import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--quick"])
    assert args.out.startswith("runs/")
    seen = {}

    class Stop(Exception):
        pass

    def fake_benchmark(candidates, threads, durations, repeats, memory):
        seen.update(threads=threads, durations=durations, repeats=repeats, memory=memory)
        raise Stop

    monkeypatch.setattr(cli, "build_candidates", lambda *arguments: [])
    monkeypatch.setattr(cli, "benchmark", fake_benchmark)
    with pytest.raises(Stop):
        cli.run(args)
    assert seen["threads"] == [1] and seen["durations"] == [10.0] and seen["repeats"] == 1 and seen["memory"] is None
