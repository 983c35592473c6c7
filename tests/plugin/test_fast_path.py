"""The fast relative-position attention path computes the plain (reference) path's numbers.

Checked against the plain path on random inputs for every length and padding case (including windowed
inputs), in low precision, and for training: dropout and gradients. Both paths against the reference
fixtures: test_parity.py.
"""
from __future__ import annotations

import pytest
import torch

from hear_embed import attention
from hear_embed.attention import RelativePositionSelfAttention, set_attention_path, skew, unskew
from hear_embed.weights import load_acoustic_model

MAX_LENGTH = 12  # small tables so every length 1..max_length is cheap
PATHS = ("plain", "fast")


def _random_attention(hidden_size=16, num_heads=2, dropout=0.0, max_length=MAX_LENGTH, seed=0):
    torch.manual_seed(seed)
    module = RelativePositionSelfAttention(hidden_size, num_heads, dropout, max_length)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(std=0.5)
    return module


def _both_paths(module, *inputs):
    outputs = []
    for path in PATHS:
        module.path = path
        outputs.append(module(*inputs))
    return outputs


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8])
def test_skew_and_unskew_match_index_definitions(length):
    by_offset = torch.randn(2, length, 2 * length)
    probs = torch.randn(2, length, length)
    i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
    assert torch.equal(skew(by_offset), by_offset[:, i, j - i + length])
    expected = torch.zeros(2, length, 2 * length)
    expected[:, i, j - i + length] = probs
    assert torch.equal(unskew(probs), expected)


@pytest.mark.parametrize("length", range(1, MAX_LENGTH + 1))
@pytest.mark.parametrize("padded", [False, True])
@torch.no_grad()
def test_paths_agree_on_every_length(length, padded):
    module = _random_attention().eval()
    hidden = torch.randn(3, length, 16)
    valid = torch.tensor([length, max(1, length - 3), 1]) if padded else torch.full((3,), length)
    key_mask = torch.arange(length)[None, :] < valid[:, None]
    plain, fast = _both_paths(module, hidden, key_mask if padded else None)
    assert (plain - fast).abs().max() < 1e-5


@pytest.mark.parametrize("path", PATHS)
def test_too_long_input_is_a_clear_error(path):
    module = _random_attention()
    module.path = path
    with pytest.raises(ValueError, match="longer than the relative-position tables"):
        module(torch.randn(1, MAX_LENGTH + 1, 16))


def test_unknown_path_is_a_clear_error():
    module = _random_attention()
    module.path = "quick"
    with pytest.raises(ValueError, match="attention path"):
        module(torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match="attention path"):
        set_attention_path(module, "quick")


def test_module_level_default_selects_the_path(monkeypatch):
    module = _random_attention()
    calls = []
    monkeypatch.setattr(module, "_attend_plain", lambda *a: calls.append("plain") or a[2])
    monkeypatch.setattr(module, "_attend_fast", lambda *a: calls.append("fast") or a[2])
    assert attention.default_path == "fast"
    module(torch.randn(1, 3, 16))
    monkeypatch.setattr(attention, "default_path", "plain")
    module(torch.randn(1, 3, 16))
    module.path = "fast"
    module(torch.randn(1, 3, 16))
    assert calls == ["fast", "plain", "fast"]


@pytest.mark.parametrize("length", [1, 7, MAX_LENGTH])
def test_training_dropout_and_gradients_agree(length):
    module = _random_attention(dropout=0.3).train()
    hidden = torch.randn(2, length, 16)
    key_mask = torch.arange(length)[None, :] < torch.tensor([length, max(1, length // 2)])[:, None]
    results = []
    for path in PATHS:
        module.path = path
        module.zero_grad()
        x = hidden.clone().requires_grad_(True)
        torch.manual_seed(123)  # the same dropout mask on both paths
        out = module(x, key_mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters()}
        results.append((out.detach(), x.grad, grads))
    (out_p, x_p, g_p), (out_f, x_f, g_f) = results
    assert not torch.allclose(out_p, _eval_output(module, hidden, key_mask), atol=1e-3)  # dropout was active
    assert (out_p - out_f).abs().max() < 1e-5
    assert (x_p - x_f).abs().max() < 1e-5
    for name in g_p:
        assert (g_p[name] - g_f[name]).abs().max() < 1e-5, name
    assert g_f["relative_position_v.positional_embedding.weight"].abs().sum() > 0


def _eval_output(module, hidden, key_mask):
    module.eval()
    with torch.no_grad():
        out = module(hidden, key_mask)
    module.train()
    return out


@pytest.fixture(scope="module")
def small_model(parity_dir):
    return load_acoustic_model(parity_dir / "acoustic_model_small.pth")[0]


@pytest.mark.parametrize("frames", [[40, 17], [601, 601], [1331, 700, 2]])
@torch.no_grad()
def test_paths_agree_on_windowed_padded_batches(small_model, frames):
    torch.manual_seed(1)
    log_mel = torch.randn(len(frames), 128, max(frames))
    outputs = []
    for path in PATHS:
        set_attention_path(small_model, path)
        outputs.append(small_model(log_mel, torch.tensor(frames))[0])
    set_attention_path(small_model, None)
    assert (outputs[0] - outputs[1]).abs().max() < 1e-5


# bf16 keeps 8 mantissa bits, fp16 11: tolerances relative to the largest output value
LOW_PRECISION_TOL = {torch.bfloat16: 2e-2, torch.float16: 3e-3}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["autocast", "cast"])
@torch.no_grad()
def test_low_precision_inference_agrees(parity_dir, path, dtype, mode):
    """bf16/fp16 inference (what a GPU runs) works and stays close to fp32, checked here on CPU."""
    if mode == "autocast" and dtype == torch.float16:
        pytest.skip("CPU autocast is bf16; fp16 autocast is a GPU feature")
    model = set_attention_path(load_acoustic_model(parity_dir / "acoustic_model_small.pth")[0], path)  # a fresh copy
    torch.manual_seed(2)
    log_mel = torch.randn(2, 128, 1331)
    lengths = torch.tensor([1331, 700])
    expected = model(log_mel, lengths)[0]
    if mode == "autocast":
        with torch.autocast("cpu", dtype=dtype):
            out = model(log_mel, lengths)[0]
    else:
        out = model.to(dtype)(log_mel.to(dtype), lengths)[0]
    assert out.dtype == dtype
    out = out.float()
    assert (out - expected).abs().max() < LOW_PRECISION_TOL[dtype] * expected.abs().max()
    valid = torch.cat([expected[0], expected[1, :350]]), torch.cat([out[0], out[1, :350]])  # 700 // 2 frames
    assert float(torch.nn.functional.cosine_similarity(*valid, dim=-1).min()) > 0.999
