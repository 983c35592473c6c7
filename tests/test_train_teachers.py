"""Teacher adapters: an SSAST checkpoint of the real layout (tiny, random, built here) and HEAR-module interpolation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hear_embed.train.teachers import SSASTTeacher, build_teacher, interpolate_to_frames, kaldi_fbank

DIM, HEADS, DEPTH, MLP = 16, 2, 2, 32


def ssast_state_dict(pretrain_frames: int, cls_tokens: int = 2) -> dict[str, torch.Tensor]:
    """A random state_dict laid out as SSAST saves it (DataParallel 'module.' prefix, timm ViT under 'v.')."""
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    state = {"module.v.patch_embed.proj.weight": rand(DIM, 1, 128, 2), "module.v.patch_embed.proj.bias": rand(DIM),
             "module.v.cls_token": rand(1, 1, DIM), "module.v.pos_embed": rand(1, pretrain_frames // 2 + cls_tokens, DIM),
             "module.v.norm.weight": 1 + rand(DIM), "module.v.norm.bias": rand(DIM),
             "module.p_input_fdim": torch.tensor(128), "module.p_input_tdim": torch.tensor(pretrain_frames),
             "module.cpredlayer.0.weight": rand(DIM, DIM)}  # pretraining heads are ignored
    if cls_tokens == 2:
        state["module.v.dist_token"] = rand(1, 1, DIM)
    for i in range(DEPTH):
        block = f"module.v.blocks.{i}."
        state.update({block + "norm1.weight": 1 + rand(DIM), block + "norm1.bias": rand(DIM),
                      block + "attn.qkv.weight": rand(3 * DIM, DIM), block + "attn.qkv.bias": rand(3 * DIM),
                      block + "attn.proj.weight": rand(DIM, DIM), block + "attn.proj.bias": rand(DIM),
                      block + "norm2.weight": 1 + rand(DIM), block + "norm2.bias": rand(DIM),
                      block + "mlp.fc1.weight": rand(MLP, DIM), block + "mlp.fc1.bias": rand(MLP),
                      block + "mlp.fc2.weight": rand(DIM, MLP), block + "mlp.fc2.bias": rand(DIM)})
    return state


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
    torch.set_num_threads(1)
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
