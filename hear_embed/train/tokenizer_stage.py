"""Stage 1: train the Acoustic Tokenizer.

log-mel -> tokenizer -> code logits -> Gumbel-softmax quantizer -> decoder, which reconstructs the log-mel
(2 frames per code) and predicts a teacher's features. Loss, as in the reference:
0.3 * MSE(reconstruction) + 0.7 * mean(1 - cos(prediction, teacher)) + 0.1 * diversity.
With ``distillation_weight`` 0 no teacher is needed. Several teachers (:class:`TeacherSet`) are predicted by one
head each (distillation = weighted mean of their cosine losses) or by one head on their concatenated, per-frame
L2-normalized features; each teacher's own loss is logged as ``distillation_<name>``, and codebook usage as
``codes_used`` / ``code_perplexity``. Run: ``python -m hear_embed.train.tokenizer_stage --config cfg.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from hear_embed.config import DecoderConfig, FrontendConfig, TokenizerConfig, config_to_dict
from hear_embed.frontend import Frontend
from hear_embed.tokenizer import AcousticTokenizer
from hear_embed.layers import length_mask
from hear_embed.train.checkpoints import TrainingError
from hear_embed.train.collapse_metrics import codebook_usage
from hear_embed.train.config_file import ConfigError, read_sections, run_record
from hear_embed.train.data import DataConfig
from hear_embed.train.decoder import Decoder, GumbelQuantizer
from hear_embed.train.features import log_mel_batch
from hear_embed.train.runner import TrainConfig, train
from hear_embed.train.teachers import TeacherSet, build_teacher


@dataclass(frozen=True)
class TokenizerLossConfig:
    """Loss weights and Gumbel temperature schedule (reference defaults)."""

    reconstruction_weight: float = 0.3
    distillation_weight: float = 0.7
    diversity_weight: float = 0.1
    initial_temperature: float = 2.0
    min_temperature: float = 0.5
    temperature_decay: float = 0.999995  # per optimizer step


def align_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(batch, frames, dim) -> (batch, num_frames, dim): truncated or zero-padded at the end."""
    if features.shape[1] >= num_frames:
        return features[:, :num_frames]
    return nn.functional.pad(features, (0, 0, 0, num_frames - features.shape[1]))


def cosine_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos) over rows of (n, dim) tensors."""
    return (1.0 - nn.functional.cosine_similarity(predicted.float(), target, dim=-1)).mean()


def distillation_losses(predictions: list[torch.Tensor], targets: list[torch.Tensor], valid: torch.Tensor,
                        names: list[str], weights: list[float], concatenated: bool) -> tuple[torch.Tensor, dict]:
    """Teacher predictions [(batch, frames, k)] against targets [(batch, frames, size_i)] on ``valid`` (batch, frames)
    -> (distillation loss, {"distillation_<name>": each teacher's 1 - cos, detached}); see the module docstring."""
    total = sum(weights)
    if concatenated:
        normalized = [nn.functional.normalize(target[valid], dim=-1) for target in targets]
        target = torch.cat([(weight / total) ** 0.5 * part for weight, part in zip(weights, normalized)], dim=-1)
        predicted = predictions[0][valid]
        loss = cosine_loss(predicted, target)
        parts = predicted.detach().split([part.shape[-1] for part in normalized], dim=-1)
        each = [cosine_loss(part, target_part) for part, target_part in zip(parts, normalized)]
    else:
        each = [cosine_loss(predicted[valid], target[valid]) for predicted, target in zip(predictions, targets)]
        loss = sum(weight * value for weight, value in zip(weights, each)) / total
    return loss, {f"distillation_{name}": value.detach() for name, value in zip(names, each)}


class TokenizerStage(nn.Module):
    """The stage-1 model; ``forward(batch)`` -> {"loss", "reconstruction", "distillation", "diversity", "codes_used",
    "code_perplexity", and "distillation_<name>" per teacher of a :class:`TeacherSet`} (components unweighted, "loss"
    weighted; "codes_used" / "code_perplexity": distinct argmax codes in the batch / exp of their entropy)."""

    def __init__(self, tokenizer: TokenizerConfig, decoder: DecoderConfig, loss: TokenizerLossConfig,
                 teacher: nn.Module | None = None):
        super().__init__()
        if loss.distillation_weight > 0 and teacher is None:
            raise ValueError("distillation_weight > 0 needs a teacher (config section 'teacher'); set it to 0 to train without one")
        self.loss_config = loss
        self.frontend = Frontend(FrontendConfig())
        self.tokenizer = AcousticTokenizer(tokenizer)
        self.quantizer = GumbelQuantizer(tokenizer.num_codebooks, decoder.code_vector_size, decoder.hidden_size,
                                         loss.initial_temperature, loss.min_temperature, loss.temperature_decay)
        teacher_sizes: tuple[int, ...] = ()
        if isinstance(teacher, TeacherSet):
            sizes = tuple(teacher.feature_sizes.values())
            if teacher.target == "heads":
                teacher_sizes = sizes
            elif decoder.knowledge_hidden_size != sum(sizes):
                raise ValueError(f"concatenated teacher target: decoder.knowledge_hidden_size is {decoder.knowledge_hidden_size}, "
                                 f"but the teachers' features add up to {sum(sizes)} ({teacher.feature_sizes})")
        self.decoder = Decoder(decoder, teacher_sizes=teacher_sizes)
        if loss.distillation_weight == 0:  # no teacher: the teacher head gets no gradient (and DDP needs to know)
            self.decoder.out_layer.out_linear2.requires_grad_(False)
        self._teacher = (teacher,)  # kept out of state_dict, parameters() and DDP

    def after_step(self, step: int) -> None:
        self.quantizer.anneal()

    def log_values(self) -> dict:
        return {"temperature": f"{float(self.quantizer.temperature):.5f}"}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        waveform, lengths = batch["waveform"], batch["lengths"]
        log_mel, frames = log_mel_batch(self.frontend, waveform, lengths)
        logits, code_lengths = self.tokenizer(log_mel, frames)
        decoder_input, diversity = self.quantizer(logits, code_lengths, batch["seeds"])
        predicted_mel, predicted_teacher, mel_lengths = self.decoder(decoder_input, code_lengths)
        teacher_frames = predicted_teacher[0].shape[1]

        valid_mel = length_mask(mel_lengths, predicted_mel.shape[1])
        target_mel = log_mel.transpose(1, 2)[:, : predicted_mel.shape[1]]
        reconstruction = nn.functional.mse_loss(predicted_mel[valid_mel].float(), target_mel[valid_mel])

        loss = self.loss_config.reconstruction_weight * reconstruction + self.loss_config.diversity_weight * diversity
        distillation, per_teacher = torch.zeros((), device=loss.device), {}
        teacher = self._teacher[0]
        if self.loss_config.distillation_weight > 0:
            teacher.to(waveform.device)
            with torch.no_grad():
                targets = teacher(waveform, lengths)
            targets = [align_frames(target.float(), teacher_frames) for target in (targets if isinstance(targets, list) else [targets])]
            if isinstance(teacher, TeacherSet):
                names, weights = list(teacher.feature_sizes), [teacher.weights[name] for name in teacher.feature_sizes]
                concatenated = teacher.target == "concatenated"
            else:
                names, weights, concatenated = ["teacher"], [1.0], False
            distillation, per_teacher = distillation_losses(predicted_teacher, targets, length_mask(code_lengths, teacher_frames),
                                                            names, weights, concatenated)
            if not isinstance(teacher, TeacherSet):
                per_teacher = {}  # the single teacher's loss is "distillation"
            loss = loss + self.loss_config.distillation_weight * distillation
        codes_used, perplexity = codebook_usage(logits.argmax(dim=-1)[length_mask(code_lengths, logits.shape[1])],
                                                logits.shape[-1])
        return {"loss": loss, "reconstruction": reconstruction, "distillation": distillation, "diversity": diversity,
                "codes_used": torch.tensor(float(codes_used)), "code_perplexity": torch.tensor(perplexity), **per_teacher}


def export_tokenizer(stage: TokenizerStage, path: Path, meta: dict) -> None:
    """Write the trained tokenizer in the project's checkpoint format (readable by ``load_tokenizer``)."""
    from hear_embed.weights import save_checkpoint

    save_checkpoint(stage.tokenizer.cpu(), path, meta)


SECTIONS = {"data": DataConfig, "train": TrainConfig, "tokenizer": TokenizerConfig, "decoder": DecoderConfig,
            "loss": TokenizerLossConfig}


def run(config_path: str | Path, out_dir: str | Path, overrides: dict | None = None) -> dict:
    """Train stage 1 from a JSON config; writes ``out_dir/tokenizer.pt`` when finished."""
    sections = read_sections(config_path, SECTIONS, extra=("teacher",))
    for section, values in (overrides or {}).items():
        sections[section] = dataclasses.replace(sections[section], **values)
    torch.manual_seed(sections["train"].seed)
    teacher = build_teacher(sections["teacher"]) if sections["loss"].distillation_weight > 0 else None
    stage = TokenizerStage(sections["tokenizer"], sections["decoder"], sections["loss"], teacher)
    meta = {"stage": "tokenizer", "planned_steps": sections["train"].steps, "teacher": sections["teacher"],
            "loss": config_to_dict(sections["loss"]), "data_sources": list(sections["data"].sources)}
    return train(stage, sections["data"], sections["train"], out_dir, run_config=run_record(sections),
                 export=lambda model, folder, step: export_tokenizer(model, Path(folder) / "tokenizer.pt", {**meta, "steps": step}))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON config (sections data, train, ...)")
    parser.add_argument("--out-dir", required=True, help="folder for checkpoint.pt, log.csv and the exported model")
    parser.add_argument("--data", nargs="+", help="override data.sources: folders or manifest files")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--max-wall-seconds", type=float, help="override train.max_wall_seconds")


def overrides_from(args: argparse.Namespace) -> dict:
    overrides: dict = {"data": {}, "train": {}}
    if args.data:
        overrides["data"]["sources"] = tuple(args.data)
    if args.steps is not None:
        overrides["train"]["steps"] = args.steps
    if args.max_wall_seconds is not None:
        overrides["train"]["max_wall_seconds"] = args.max_wall_seconds
    return overrides


def run_command(run_stage: Callable[[], dict]) -> int:
    """Exit status of a stage's command line: 0 with the result as JSON, 1 with the message of a
    :class:`TrainingError` or :class:`ConfigError` (unusable checkpoint or config, non-finite loss)."""
    try:
        result = run_stage()
    except (TrainingError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result["rank"] == 0:
        print(json.dumps({key: result[key] for key in ("step", "finished", "skipped_files", "seconds")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hear_embed.train.tokenizer_stage", description=__doc__.split("\n")[1])
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: run(args.config, args.out_dir, overrides_from(args)))


if __name__ == "__main__":
    raise SystemExit(main())
