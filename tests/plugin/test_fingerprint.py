"""``hear_embed.fingerprint.state_fingerprint``: the weights' identity by content, for the CLI's output records and
the harness's cache keys (one function for both)."""
from __future__ import annotations

import pytest
import torch

from hear_embed.api import load_model
from hear_embed.fingerprint import state_fingerprint


@pytest.fixture(scope="module")
def checkpoint(parity_dir) -> str:
    return str(parity_dir / "acoustic_model_small.pth")


def test_same_weights_same_fingerprint_across_loads(checkpoint):
    first, second = load_model(checkpoint).acoustic_model, load_model(checkpoint).acoustic_model
    assert first is not second
    fingerprint = state_fingerprint(first)
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert state_fingerprint(second) == fingerprint


@pytest.mark.parametrize("change", ["one value", "dtype", "shape"])
def test_any_change_of_content_changes_the_fingerprint(change):
    """Same bytes under another dtype or shape are other weights: the fingerprint says so."""
    module = torch.nn.Linear(4, 6)
    before = state_fingerprint(module)
    with torch.no_grad():
        if change == "one value":
            module.weight[2, 3] += 1e-6
        elif change == "dtype":
            module.weight = torch.nn.Parameter(module.weight.view(torch.int32), requires_grad=False)
        else:
            module.weight = torch.nn.Parameter(module.weight.reshape(4, 6))
    assert state_fingerprint(module) != before


def test_int8_weights_are_fingerprinted_stably_and_distinctly(checkpoint):
    """Dynamic int8 layers pack their weights in tuples of quantized tensors (issue: the CLI's former hash
    raised AttributeError on them)."""
    int8 = state_fingerprint(load_model(checkpoint, quantize="int8").acoustic_model)
    assert int8 == state_fingerprint(load_model(checkpoint, quantize="int8").acoustic_model)
    assert int8 != state_fingerprint(load_model(checkpoint).acoustic_model)


def test_harness_and_cli_use_the_same_fingerprint(checkpoint):
    from eval.embed import state_fingerprint as harness_fingerprint
    from hear_embed.cli import run_record

    model = load_model(checkpoint)
    assert harness_fingerprint(model) == state_fingerprint(model)
    assert str(run_record(model, scene=False)["weights_sha256"]) == state_fingerprint(model.acoustic_model)
    assert harness_fingerprint(object()) is None
