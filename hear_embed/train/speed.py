"""Training speed at the paper's full size on this machine: steps per second of stage 1 (without a teacher and
with an SSAST-base teacher of the real layout, random weights) and stage 2, on synthetic 6 s clips.

    python -m hear_embed.train.speed --threads 1 --steps 4 --out-dir runs/speed

Each stage runs the shipped ``paper_*.json`` config with a few steps; the rate is taken over steps 2..N
(the first step pays for warm-up). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from hear_embed.train import mam_stage, tokenizer_stage

CONFIGS = Path(__file__).resolve().parent / "configs"


def random_ssast_state_dict(dim: int = 768, depth: int = 12, mlp: int = 3072, pretrain_frames: int = 1024,
                            cls_tokens: int = 2, scale: float = 0.02, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict laid out as SSAST saves it (DataParallel 'module.' prefix, timm ViT under 'v.',
    pretraining heads that adapters must ignore). Defaults: SSAST-base, 85.6 M parameters."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * scale

    state = {"module.v.patch_embed.proj.weight": rand(dim, 1, 128, 2), "module.v.patch_embed.proj.bias": rand(dim),
             "module.v.cls_token": rand(1, 1, dim), "module.v.pos_embed": rand(1, pretrain_frames // 2 + cls_tokens, dim),
             "module.v.norm.weight": 1 + rand(dim), "module.v.norm.bias": rand(dim),
             "module.p_input_fdim": torch.tensor(128), "module.p_input_tdim": torch.tensor(pretrain_frames),
             "module.cpredlayer.0.weight": rand(dim, dim)}
    if cls_tokens == 2:
        state["module.v.dist_token"] = rand(1, 1, dim)
    for i in range(depth):
        block = f"module.v.blocks.{i}."
        state.update({block + "norm1.weight": 1 + rand(dim), block + "norm1.bias": rand(dim),
                      block + "attn.qkv.weight": rand(3 * dim, dim), block + "attn.qkv.bias": rand(3 * dim),
                      block + "attn.proj.weight": rand(dim, dim), block + "attn.proj.bias": rand(dim),
                      block + "norm2.weight": 1 + rand(dim), block + "norm2.bias": rand(dim),
                      block + "mlp.fc1.weight": rand(mlp, dim), block + "mlp.fc1.bias": rand(mlp),
                      block + "mlp.fc2.weight": rand(dim, mlp), block + "mlp.fc2.bias": rand(dim)})
    return state


def write_clips(folder: Path, count: int = 16, seconds: float = 6.0) -> None:
    """``count`` tones in noise, 16 kHz mono WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(count):
        audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i}.wav", audio.astype("float32"), 16000)


def steps_per_second(log_csv: Path) -> float:
    seconds = pd.read_csv(log_csv)["seconds"].to_numpy()
    return (len(seconds) - 1) / (seconds[-1] - seconds[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=4, help="steps per stage (at least 3)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/speed"))
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error(f"--steps must be at least 3, got {args.steps}")
    root = args.out_dir
    write_clips(root / "audio")
    torch.save(random_ssast_state_dict(), root / "ssast_base_random.pth")

    def config(name: str, out: str, **changes) -> Path:
        cfg = json.loads((CONFIGS / f"paper_{name}.json").read_text())
        cfg["train"].update(steps=args.steps, log_every=1, checkpoint_every=10 * args.steps, num_threads=args.threads)
        cfg["data"].update(sources=[str(root / "audio")], num_workers=0)
        for section, values in changes.items():
            cfg[section].update(values)
        path = root / f"{out}.json"
        path.write_text(json.dumps(cfg))
        return path

    runs = {"stage 1, no teacher": ("s1", lambda out: tokenizer_stage.run(
                config("tokenizer", out, loss={"distillation_weight": 0.0}), root / out)),
            "stage 1, SSAST-base teacher (random weights)": ("s1_ssast", lambda out: tokenizer_stage.run(
                config("tokenizer", out, teacher={"checkpoint": str(root / "ssast_base_random.pth")}), root / out)),
            "stage 2": ("s2", lambda out: mam_stage.run(config("mam", out), root / out, tokenizer="random"))}
    for name, (out, go) in runs.items():
        shutil.rmtree(root / out, ignore_errors=True)  # a finished run would otherwise be resumed, not timed
        go(out)
        rate = steps_per_second(root / out / "log.csv")
        print(f"{name}: {rate:.3f} steps/s ({1 / rate:.1f} s/step), batch 8 x 6 s, {args.threads} thread(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
