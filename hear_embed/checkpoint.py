"""Checkpoint files: reading every layout we accept, finding a module's keys, inferring its config from
tensor shapes, strict shape checks with clear messages, and writing the project's own format.

Layouts read (``torch.load(weights_only=True, map_location="cpu")``: never arbitrary pickle): a raw
``state_dict`` (how the authors save), one wrapped under a common key (``state_dict``, ``model``, ...),
a pickled whole module (read by :mod:`hear_embed.module_unpickler`, which imports and runs nothing),
keys under a prefix (``module.``, ``model.``, ``acoustic_model.``, ...), ``.safetensors`` files, and the
project format written by :func:`save_checkpoint` (config and meta stored next to the weights).
"""
from __future__ import annotations

import json
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from hear_embed.acoustic_model import AcousticModel
from hear_embed.atomic_files import atomic_path
from hear_embed.config import (AcousticModelConfig, ClassificationDecoderConfig, TaskModelConfig, TokenizerConfig,
                               config_from_dict)
from hear_embed.frontend import Frontend
from hear_embed.module_unpickler import RefusedGlobal, load_pickled_module
from hear_embed.tokenizer import AcousticTokenizer

FORMAT, FORMAT_VERSION = "hear_embed", 1
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
# A module is found through one key it must hold; a prefix ending in its own name marks it as part of a larger
# checkpoint (the classifier holds "acoustic_model."), whose other keys are then ignored.
ANCHORS = {"acoustic_model": "feature_extractor.conv.weight", "tokenizer": "encoder.feature_extractor.conv.weight",
           "classifier": "acoustic_model.feature_extractor.conv.weight"}
KINDS = {AcousticModel: "acoustic_model", AcousticTokenizer: "tokenizer"}
PREPROCESSOR_BUFFERS = {"preprocessor.spectrogram.window": "window",
                        "preprocessor.mel_spectrogram.spectrogram.window": "window",
                        "preprocessor.mel_spectrogram.mel_scale.fb": "mel_fb"}
DEFAULT_OVERLAP = AcousticModelConfig.overlap  # not stored in weights: a runtime choice of the sliding window
DEFAULT_TASK_HEADS = TaskModelConfig.num_attention_heads  # in_proj_weight is (3H, H) whatever the head count


class CheckpointError(ValueError):
    """A file that is not a checkpoint, or one that does not fit the model; the message names file and key."""


@dataclass(frozen=True)
class Checkpoint:
    """What a file holds: tensors by key, how they were laid out, and (project format only) kind/config/meta."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    kind: str | None = None
    config: dict | None = None
    meta: dict = field(default_factory=dict)


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _check_zip_crcs(path: Path) -> None:
    """torch.load does not check the zip members' CRC-32: a file with flipped bytes would load with other weights."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy (non-zip) format has no checksums
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise CheckpointError(f"{path}: damaged checkpoint file ({error})") from error
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged checkpoint file: member '{damaged}' fails its CRC-32 check")


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # torch colours some messages
    return text.splitlines()[0].strip() if text else type(error).__name__


def _load_torch(path: Path) -> tuple[object, bool]:
    """(content, whether it was a pickled whole module read by :mod:`hear_embed.module_unpickler`)."""
    _check_zip_crcs(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        weights_only_error = error
    try:  # a pickled whole module (the reference's classes): rebuilt from stand-ins, nothing imported or run
        return load_pickled_module(path), True
    except RefusedGlobal as error:
        raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint; read as a pickled module: "
                              f"{error}") from error
    except Exception:
        raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint "
                              f"({_first_line(weights_only_error)})") from weights_only_error


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open
    except ImportError as error:
        raise CheckpointError(f"{path}: reading .safetensors needs the optional package 'safetensors' "
                              "(pip install safetensors)") from error
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {key: file.get_tensor(key) for key in file.keys()}, file.metadata() or {}
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def _header_field(path: Path, header: dict, key: str, decode_json: bool):
    """A dict field ("config", "meta") of a project-format header, JSON-decoded for safetensors; None if absent."""
    value = header.get(key)
    if decode_json and value:
        try:
            value = json.loads(value)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: checkpoint metadata field '{key}' is not valid JSON ({error})") from None
    if value and not isinstance(value, dict):
        raise CheckpointError(f"{path}: checkpoint metadata field '{key}' must be a dict, "
                              f"got {type(value).__name__}")
    return value or None


def _project_checkpoint(path: Path, state_dict: dict, header: dict, decode_json: bool) -> Checkpoint:
    version = header.get("format_version", 0)
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: checkpoint metadata field 'format_version' must be an integer, "
                              f"got {version!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: hear_embed checkpoint format {version} is newer than this version "
                              f"reads ({FORMAT_VERSION}); upgrade hear_embed")
    kind = header.get("kind")
    if kind is not None and kind not in KINDS.values():
        raise CheckpointError(f"{path}: checkpoint metadata field 'kind' must be one of {sorted(KINDS.values())}, "
                              f"got {kind!r}")
    config, meta = _header_field(path, header, "config", decode_json), _header_field(path, header, "meta", decode_json)
    suffix = " (safetensors)" if decode_json else ""
    return Checkpoint(dict(state_dict), f"hear_embed v{version}{suffix}", kind, config, meta or {})


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any accepted layout from ``path`` into a flat {key: tensor} dict (prefixes are kept)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file" + (" (it is a directory)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        tensors, metadata = _load_safetensors(path)
        if metadata.get("format") == FORMAT:
            return _project_checkpoint(path, tensors, metadata, decode_json=True)
        if not tensors:
            raise CheckpointError(f"{path}: holds no tensors")
        return Checkpoint(tensors, "safetensors")
    obj, pickled_module = _load_torch(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not _is_state_dict(obj.get("state_dict")):
            raise CheckpointError(f"{path}: hear_embed checkpoint without a state_dict of tensors")
        return _project_checkpoint(path, obj["state_dict"], obj, decode_json=False)
    wrappers = []
    while isinstance(obj, dict) and not _is_state_dict(obj):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None or len(wrappers) == 3:
            break
        wrappers.append(key)
        obj = obj[key]
    if not _is_state_dict(obj):
        if not isinstance(obj, dict):
            what = f"a {type(obj).__name__}, not a dict of tensors"
        else:
            what = f"a dict with keys {list(obj)[:8]} but no state_dict of tensors" if obj else "an empty dict"
        where = f" under {' > '.join(map(repr, wrappers))}" if wrappers else ""
        raise CheckpointError(f"{path}: holds {what}{where}; expected a state_dict (key -> tensor)")
    layout = f"wrapped under {' > '.join(map(repr, wrappers))}" if wrappers else "state_dict"
    if pickled_module:
        layout = f"pickled module read without its code, {layout}"
    return Checkpoint(dict(obj), layout)


def select_module(state_dict: dict, module: str, source: str | Path = "checkpoint") -> tuple[dict, str, int]:
    """Keys of ``module`` ("acoustic_model", "tokenizer" or "classifier") with their shared prefix removed.

    Returns (state_dict, prefix, number of ignored keys). Keys outside the prefix are ignored only when the
    prefix ends in the module's own name (an acoustic model inside a classifier); otherwise they are kept,
    so that the strict check reports them as unexpected.
    """
    anchor = ANCHORS[module]
    prefixes = [key[: -len(anchor)] for key in state_dict
                if key.endswith(anchor) and (key == anchor or key[-len(anchor) - 1] == ".")]
    if len(prefixes) > 1:
        prefixes = [p for p in prefixes if p.endswith(f"{module}.")] or prefixes
    if not prefixes:
        raise CheckpointError(f"{source}: no {module} weights in this checkpoint: no key ends in '{anchor}' "
                              f"(first keys: {list(state_dict)[:5]})")
    if len(prefixes) > 1:
        raise CheckpointError(f"{source}: several {module} candidates in one checkpoint, prefixes {prefixes}")
    prefix = prefixes[0]
    inside = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    outside = {key: value for key, value in state_dict.items() if not key.startswith(prefix)}
    if outside and prefix.endswith(f"{module}."):
        return inside, prefix, len(outside)
    return {**inside, **outside}, prefix, 0


def describe_layout(layout: str, prefix: str, ignored: int) -> str:
    """One line for WeightsInfo: "authors state_dict" (raw, no prefix), "wrapped under 'model', prefix 'module.'"..."""
    if layout == "state_dict" and not prefix:
        return "authors state_dict"
    text = layout + (f", prefix {prefix!r}" if prefix else "")
    return text + (f" ({ignored} keys of the enclosing model ignored)" if ignored else "")


def _shape(state_dict: dict, key: str, source: str) -> torch.Size:
    if key not in state_dict:
        raise CheckpointError(f"{source}: cannot infer the config: missing key '{key}'")
    return state_dict[key].shape


def _encoder_fields(state_dict: dict, source: str) -> dict:
    """Encoder sizes from shapes: conv (hidden, n_mels, 2), query_bias1 (heads, head_size), ffn intermediate
    (intermediate, hidden), relative-position tables (2 * max_length, head_size); layers from the indices."""
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(r"contextual_encoder\.layers\.(\d+)\.", key))}
    if not layers:
        raise CheckpointError(f"{source}: cannot infer the config: no 'contextual_encoder.layers.<i>.' keys")
    first = "contextual_encoder.layers.0."
    return {
        "hidden_size": _shape(state_dict, "feature_extractor.conv.weight", source)[0],
        "intermediate_size": _shape(state_dict, first + "ffn.intermediate_dense.weight", source)[0],
        "num_attention_heads": _shape(state_dict, first + "self_attn.query_bias1", source)[0],
        "num_transformer_layers": max(layers) + 1,
        "max_length": _shape(state_dict, first + "self_attn.relative_position_k.positional_embedding.weight",
                             source)[0] // 2,
    }


def _build(cls: type, values: dict, source: str):
    try:
        return config_from_dict(cls, values)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from error


def infer_acoustic_config(state_dict: dict, source: str = "checkpoint") -> AcousticModelConfig:
    """Acoustic Model config from tensor shapes. ``overlap`` is not in the weights: the paper's 50, clamped to
    ``max_length - 1`` for configs with tiny windows."""
    values = _encoder_fields(state_dict, source)
    return _build(AcousticModelConfig, {**values, "overlap": min(DEFAULT_OVERLAP, values["max_length"] - 1)}, source)


def infer_tokenizer_config(state_dict: dict, source: str = "checkpoint") -> TokenizerConfig:
    """Tokenizer config from shapes: the encoder's as above, ``num_codebooks`` from ``linear.weight``."""
    encoder = {key[len("encoder."):]: v for key, v in state_dict.items() if key.startswith("encoder.")}
    values = {**_encoder_fields(encoder, source), "num_codebooks": _shape(state_dict, "linear.weight", source)[0]}
    return _build(TokenizerConfig, values, source)


def infer_classifier_configs(state_dict: dict, source: str = "checkpoint"
                             ) -> tuple[AcousticModelConfig, TaskModelConfig, ClassificationDecoderConfig]:
    """The three classifier configs from shapes. The TaskModel's head count cannot be read from shapes
    (``in_proj_weight`` is (3H, H) for any count): it is the paper's 4."""
    acoustic, _, _ = select_module(state_dict, "acoustic_model", source)
    n_freqs = _shape(state_dict, "spectrogram_mixture.spectrum_linear.weight", source)[1] // 2
    pos_embed = _shape(state_dict, "task_model.pos_embed", source)
    task = {"hidden_size": pos_embed[2], "max_length": pos_embed[1], "num_attention_heads": DEFAULT_TASK_HEADS,
            "intermediate_size": _shape(state_dict, "task_model.transformer.linear1.weight", source)[0]}
    decoder = {"num_classes": _shape(state_dict, "decoder.out.weight", source)[0],
               "hidden_size": _shape(state_dict, "decoder.linear.weight", source)[0]}
    acoustic_config = infer_acoustic_config(acoustic, source)
    acoustic_config = _build(AcousticModelConfig, {**asdict(acoustic_config), "spectrogram_n_fft": 2 * (n_freqs - 1)},
                             source)
    return (acoustic_config, _build(TaskModelConfig, task, source),
            _build(ClassificationDecoderConfig, decoder, source))


def check_values(expected: dict, state_dict: dict, source: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` for the first tensor whose kind (floating point or not) differs from the
    model's, or that holds NaN or Inf: a float is never silently cast from integers, a NaN never loaded."""
    for key, ours in expected.items():
        theirs = state_dict.get(key)
        if theirs is None:
            continue
        if theirs.is_floating_point() != ours.is_floating_point() or theirs.is_complex():
            raise CheckpointError(f"{source}: key '{key}' has dtype {theirs.dtype} in the file, "
                                  f"the model expects {ours.dtype}")
        if theirs.is_floating_point() and not theirs.is_meta and not bool(torch.isfinite(theirs).all()):
            raise CheckpointError(f"{source}: key '{key}' holds NaN or Inf values")


def check_state_dict(model: nn.Module, state_dict: dict, source: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first missing, unexpected and mis-shaped key, if any, then the
    first tensor of the wrong kind or with non-finite values (:func:`check_values`)."""
    expected = model.state_dict()
    problems = []
    for label, keys in (("missing", [k for k in expected if k not in state_dict]),
                        ("unexpected", [k for k in state_dict if k not in expected])):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            problems.append(f"{label} key '{keys[0]}'{more}")
    shaped = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if shaped:
        key, more = shaped[0], f" (and {len(shaped) - 1} more)" if len(shaped) > 1 else ""
        problems.append(f"key '{key}' has shape {list(state_dict[key].shape)} in the file but "
                        f"{list(expected[key].shape)} in the model{more}")
    if problems:
        config = getattr(model, "config", None)
        raise CheckpointError(f"{source}: checkpoint does not fit {type(model).__name__}"
                              f"{f'({config})' if config else ''}: " + "; ".join(problems))
    check_values(expected, state_dict, source)


def drop_preprocessor_buffers(state_dict: dict, frontend: Frontend, source: str | Path = "checkpoint") -> dict:
    """Check the reference's stored window / mel filterbank equal our Frontend's (1e-6), then drop them."""
    for key, name in PREPROCESSOR_BUFFERS.items():
        if key not in state_dict:
            continue
        ours, theirs = getattr(frontend, name), state_dict[key]
        if theirs.shape != ours.shape:
            raise CheckpointError(f"{source}: '{key}' has shape {list(theirs.shape)}, our Frontend's "
                                  f"{name} has {list(ours.shape)}")
        if not torch.allclose(theirs.float(), ours, atol=1e-6, rtol=0):
            difference = float((theirs.float() - ours).abs().max())
            raise CheckpointError(f"{source}: '{key}' differs from our Frontend's {name} "
                                  f"(max abs difference {difference:.3g}): a different front end was used")
    return {key: value for key, value in state_dict.items() if key not in PREPROCESSOR_BUFFERS}


def _check_plain(value, where: str = "meta") -> None:
    """Meta must hold only str/int/float/bool/None, lists and str-keyed dicts (weights_only and JSON safe)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise ValueError(f"{where} is a {type(value).__name__}; meta may hold only plain types")


def save_checkpoint(model: AcousticModel | AcousticTokenizer, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` (weights + config + meta) atomically; ``.safetensors`` paths keep config/meta as JSON."""
    path, meta = Path(path), dict(meta or {})
    kind = KINDS.get(type(model))
    if kind is None:
        raise ValueError(f"save_checkpoint saves an AcousticModel or AcousticTokenizer, got {type(model).__name__}")
    _check_plain(meta)
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(path) as temporary:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(state_dict, str(temporary),
                      metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind,
                                "config": json.dumps(asdict(model.config)), "meta": json.dumps(meta)})
        else:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                        "config": asdict(model.config), "state_dict": state_dict, "meta": meta}, temporary)
    return path


def read_state_dict(path: str | Path, module: str = "acoustic_model") -> dict[str, torch.Tensor]:
    """The state_dict of ``module`` held by ``path``, in any accepted layout, prefix removed."""
    state_dict, _, _ = select_module(read_checkpoint(path).state_dict, module, path)
    return state_dict
