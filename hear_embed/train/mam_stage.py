"""Stage 2: masked audio modeling.

The frozen tokenizer labels every encoder frame with its most likely code; the Acoustic Model sees the
conv features with the masked frames zeroed (as in the reference: after the feature extractor, before the
transformer) and a linear head predicts the codes there (cross-entropy over masked frames).
Run: ``python -m hear_embed.train.mam_stage --config cfg.json --tokenizer stage1/tokenizer.pt``.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hear_embed.acoustic_model import AcousticModel
from hear_embed.config import AcousticModelConfig, FrontendConfig, config_to_dict
from hear_embed.frontend import Frontend
from hear_embed.tokenizer import AcousticTokenizer
from hear_embed.layers import length_mask
from hear_embed.train.collapse_metrics import participation_ratio
from hear_embed.train.config_file import read_sections, run_record
from hear_embed.train.data import DataConfig
from hear_embed.train.features import log_mel_batch
from hear_embed.train.masking import frame_mask
from hear_embed.train.runner import TrainConfig, train
from hear_embed.train.seeds import mixed_seed
from hear_embed.train.tokenizer_stage import add_common_arguments, overrides_from, run_command


@dataclass(frozen=True)
class MaskConfig:
    rate: float = 0.4  # fraction of valid frames hidden ("exact"), or the threshold of the reference rule
    mode: str = "exact"  # "exact" or "reference" (randn < rate: about 66 % hidden at 0.4); see masking.py


class MaskedAudioModelingStage(nn.Module):
    """The stage-2 model; ``forward(batch)`` -> {"loss", "accuracy"} (accuracy of code prediction at masked frames)."""

    def __init__(self, acoustic: AcousticModelConfig, tokenizer: AcousticTokenizer, mask: MaskConfig):
        super().__init__()
        self.mask = mask
        self.frontend = Frontend(FrontendConfig())
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.acoustic_model = AcousticModel(acoustic)
        self.out_linear = nn.Linear(acoustic.hidden_size, tokenizer.config.num_codebooks)

    def train(self, mode: bool = True) -> "MaskedAudioModelingStage":
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout when making labels
        return self

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        log_mel, frames = log_mel_batch(self.frontend, batch["waveform"], batch["lengths"])
        with torch.no_grad():
            labels = self.tokenizer(log_mel, frames)[0].argmax(dim=-1)
        hidden, lengths = self.acoustic_model.feature_extractor(log_mel, frames)
        if hidden.shape[1] > self.acoustic_model.config.max_length:
            raise ValueError(f"training crops must be at most {self.acoustic_model.config.max_length} encoder frames "
                             f"(6 s); got {hidden.shape[1]}: lower data.crop_seconds")
        seeds = torch.tensor([mixed_seed(int(seed), 2) for seed in batch["seeds"].tolist()])
        masked = frame_mask(lengths, hidden.shape[1], self.mask.rate, seeds, self.mask.mode)
        hidden = hidden.masked_fill(masked[..., None], 0.0)
        encoded = self.acoustic_model.contextual_encoder(hidden, lengths)
        logits = self.out_linear(encoded)
        loss = nn.functional.cross_entropy(logits[masked].float(), labels[masked])
        accuracy = (logits[masked].argmax(dim=-1) == labels[masked]).float().mean()
        participation = participation_ratio(encoded[length_mask(lengths, encoded.shape[1])].detach())
        return {"loss": loss, "accuracy": accuracy.detach(), "embedding_participation": torch.tensor(participation)}


def export_acoustic_model(stage: MaskedAudioModelingStage, path: Path, meta: dict) -> None:
    """Write the Acoustic Model in the project's checkpoint format (readable by ``load_acoustic_model``)."""
    from hear_embed.weights import save_checkpoint

    save_checkpoint(stage.acoustic_model.cpu(), path, meta)


SECTIONS = {"data": DataConfig, "train": TrainConfig, "acoustic_model": AcousticModelConfig, "mask": MaskConfig}


def load_frozen_tokenizer(source: str | Path) -> AcousticTokenizer:
    """A tokenizer from any file ``load_tokenizer`` reads (our stage-1 export, the authors' release, ...)."""
    from hear_embed.weights import load_tokenizer

    tokenizer, _ = load_tokenizer(str(source))
    return tokenizer


def run(config_path: str | Path, out_dir: str | Path, tokenizer: str | Path, overrides: dict | None = None) -> dict:
    """Train stage 2 from a JSON config; writes ``out_dir/acoustic_model.pt`` when finished."""
    sections = read_sections(config_path, SECTIONS)
    for section, values in (overrides or {}).items():
        sections[section] = dataclasses.replace(sections[section], **values)
    torch.manual_seed(sections["train"].seed)
    stage = MaskedAudioModelingStage(sections["acoustic_model"], load_frozen_tokenizer(tokenizer), sections["mask"])
    meta = {"stage": "masked_audio_modeling", "planned_steps": sections["train"].steps, "tokenizer": str(tokenizer),
            "mask": config_to_dict(sections["mask"]), "data_sources": list(sections["data"].sources)}
    return train(stage, sections["data"], sections["train"], out_dir, run_config=run_record(sections),
                 export=lambda model, folder, step: export_acoustic_model(model, Path(folder) / "acoustic_model.pt", {**meta, "steps": step}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hear_embed.train.mam_stage", description=__doc__.split("\n")[1])
    add_common_arguments(parser)
    parser.add_argument("--tokenizer", required=True, help="frozen tokenizer: stage-1 tokenizer.pt or any file load_tokenizer reads")
    args = parser.parse_args(argv)
    return run_command(lambda: run(args.config, args.out_dir, args.tokenizer, overrides_from(args)))


if __name__ == "__main__":
    raise SystemExit(main())
