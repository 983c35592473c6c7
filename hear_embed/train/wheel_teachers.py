"""Stage-1 teachers whose weights come from Python package wheels, run without importing those packages.

Each is called like the teachers in :mod:`hear_embed.train.teachers`: ``teacher(waveform (batch, samples) at
16 kHz, lengths (batch,))`` -> (batch, frames, ``feature_size``), frame i aligned with encoder frame i (centre
20 i + 5 ms); frames past a clip's end are zeros. Weights are read as data only: ONNX graphs through onnxruntime,
a torch state_dict with ``weights_only=True``. Get the files with ``pip download --no-deps`` and unzip:

- :class:`ResemblyzerTeacher` (speaker identity): ``resemblyzer/pretrained.pt`` from Resemblyzer 0.1.4 (Apache-2.0);
- :class:`SileroVadTeacher` (speech activity): ``silero_vad/data/silero_vad.onnx`` from silero-vad 6.2.3 (MIT);
- :class:`BasicPitchTeacher` (notes): ``basic_pitch/saved_models/icassp_2022/nmp.onnx`` from basic-pitch 0.4.0 (Apache-2.0).
"""
from __future__ import annotations

import numpy as np
import soxr
import torch
from torch import nn

from hear_embed.frontend import encoder_frame_count
from hear_embed.layers import length_mask
from hear_embed.train.teachers import interpolate_to_frames


def zero_past_end(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch, frames, dim) with frames past each clip's encoder-frame count set to 0."""
    valid = length_mask(encoder_frame_count(lengths.to(features.device)), features.shape[1])
    return features * valid[..., None]


def onnx_session(path: str):
    """A single-threaded CPU onnxruntime session; a file that is not an ONNX model raises ``ValueError`` naming it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types (NoSuchFile, InvalidProtobuf, ...)
        raise ValueError(f"{path} is not a readable ONNX model: {error}") from error


def frame_times(frames: int, hop_ms: float, first_ms: float, batch: int) -> torch.Tensor:
    """(batch, frames) times in ms of frames ``first_ms + hop_ms * j``."""
    return (first_ms + hop_ms * torch.arange(frames, dtype=torch.float64)).expand(batch, -1)


class ResemblyzerTeacher(nn.Module):
    """Resemblyzer's speaker encoder (GE2E; 3-layer LSTM on a 40-band mel power spectrogram, 25 ms / 10 ms): the
    L2-normalized 256-d embedding of 1.6 s partial utterances every ``partial_step`` mel frames, as
    ``VoiceEncoder.embed_utterance`` slices them, interpolated from partial centres to encoder frames."""

    feature_size = 256
    partial_frames, hop, n_fft, n_mels = 160, 160, 400, 40

    def __init__(self, checkpoint: str, partial_step: int = 10):
        super().__init__()
        import librosa

        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        self.lstm = nn.LSTM(self.n_mels, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        try:
            self.lstm.load_state_dict({key[5:]: value for key, value in state.items() if key.startswith("lstm.")})
            self.linear.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
        except (KeyError, RuntimeError) as error:
            raise ValueError(f"{checkpoint} is not a Resemblyzer checkpoint (pretrained.pt layout): {error}") from error
        self.register_buffer("mel_filters", torch.from_numpy(
            librosa.filters.mel(sr=16000, n_fft=self.n_fft, n_mels=self.n_mels)).float())  # (40, 201)
        self.register_buffer("window", torch.hann_window(self.n_fft))
        self.partial_step = partial_step
        self.requires_grad_(False)
        self.eval()

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(samples,) -> (frames, 40) mel power, as ``librosa.feature.melspectrogram`` (centred, zero-padded)."""
        spectrum = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant",
                              return_complex=True).abs() ** 2
        return (self.mel_filters @ spectrum).T

    def partial_starts(self, samples: int) -> list[int]:
        """First mel frame of each partial, as ``VoiceEncoder.compute_partial_slices`` with min_coverage 0.75."""
        frames = int(np.ceil((samples + 1) / self.hop))
        starts = list(range(0, max(1, frames - self.partial_frames + self.partial_step + 1), self.partial_step))
        coverage = (samples - starts[-1] * self.hop) / (self.partial_frames * self.hop)
        return starts[:-1] if coverage < 0.75 and len(starts) > 1 else starts

    def partial_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """(samples,) -> ((partials, 256) embeddings, first mel frame of each partial)."""
        starts = self.partial_starts(audio.shape[-1])
        padded_samples = (starts[-1] + self.partial_frames) * self.hop
        mel = self.mel(nn.functional.pad(audio, (0, max(0, padded_samples - audio.shape[-1]))))
        partials = torch.stack([mel[start: start + self.partial_frames] for start in starts])
        _, (hidden, _) = self.lstm(partials)
        embeddings = torch.relu(self.linear(hidden[-1]))
        return embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1e-12), starts

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = encoder_frame_count(waveform.shape[-1])
        out = []
        for clip, length in zip(waveform.float().cpu(), lengths.tolist()):
            embeddings, starts = self.partial_embeddings(clip[: int(length)])
            centres = torch.tensor(starts, dtype=torch.float64)[None] * 10.0 + (self.partial_frames - 1) * 5.0
            out.append(interpolate_to_frames(embeddings[None], centres, frames)[0])
        return zero_past_end(torch.stack(out), lengths).to(waveform.device)


class SileroVadTeacher(nn.Module):
    """Silero VAD (v5/v6 ONNX graph, 16 kHz): 512-sample chunks with 64 samples of context, run in sequence
    with its recurrent state carried over; the features are the state's first 128-d half after each chunk
    (what the speech probability is read from), interpolated from chunk centres to encoder frames."""

    feature_size = 128
    chunk, context = 512, 64

    def __init__(self, model: str):
        super().__init__()
        self.session = onnx_session(model)
        names = {node.name for node in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{model} is not a silero-vad v5+ ONNX model: inputs {sorted(names)}, expected input/state/sr")

    def run(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> (speech probability (batch, chunks), state features (batch, chunks, 128)); the last
        chunk is zero-padded."""
        audio = waveform.detach().float().cpu().numpy()
        chunks = -(-audio.shape[1] // self.chunk)
        audio = np.pad(audio, ((0, 0), (self.context, chunks * self.chunk - audio.shape[1])))
        state = np.zeros((2, audio.shape[0], 128), dtype=np.float32)
        probabilities, features = [], []
        for index in range(chunks):
            start = index * self.chunk
            probability, state = self.session.run(None, {"input": audio[:, start: start + self.context + self.chunk],
                                                         "state": state, "sr": np.array(16000, dtype=np.int64)})
            probabilities.append(probability[:, 0])
            features.append(state[0])
        return torch.from_numpy(np.stack(probabilities, axis=1)), torch.from_numpy(np.stack(features, axis=1))

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, features = self.run(waveform)
        times = frame_times(features.shape[1], 32.0, 16.0, features.shape[0])
        out = interpolate_to_frames(features, times, encoder_frame_count(waveform.shape[-1]))
        return zero_past_end(out, lengths).to(waveform.device)


class BasicPitchTeacher(nn.Module):
    """Spotify's basic-pitch (ICASSP 2022) through onnxruntime: audio resampled to 22.05 kHz, cut into 2 s windows
    overlapping by 30 frames exactly as ``basic_pitch.inference.run_inference`` does; the features are its note
    (88), onset (88) and pitch-contour (264) posteriors at 256-sample frames, interpolated to encoder frames."""

    feature_size = 88 + 88 + 264
    sample_rate, hop, window, overlap_frames = 22050, 256, 43844, 30
    outputs = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0")  # note, onset, contour

    def __init__(self, model: str):
        super().__init__()
        self.session = onnx_session(model)
        if [node.name for node in self.session.get_inputs()] != ["serving_default_input_2:0"]:
            raise ValueError(f"{model} is not basic-pitch's nmp.onnx: inputs {[n.name for n in self.session.get_inputs()]}")

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) at 22.05 kHz -> (n_windows, 43844, 1): half an overlap of zeros first, then windows every
        43844 - 30 * 256 samples, the last one zero-padded."""
        overlap = self.overlap_frames * self.hop
        padded = np.concatenate([np.zeros(overlap // 2, dtype=np.float32), audio.astype(np.float32)])
        starts = range(0, len(padded), self.window - overlap)
        return np.stack([np.pad(padded[start: start + self.window], (0, max(0, start + self.window - len(padded))))
                         for start in starts])[..., None]

    def unwrap(self, result: np.ndarray, samples: int) -> np.ndarray:
        """(n_windows, 172, bins) of one clip -> (frames, bins): half the overlap cut from each side of every window."""
        half, frames = self.overlap_frames // 2, int(np.floor(samples * (self.sample_rate // self.hop) / self.sample_rate))
        return result[:, half:-half].reshape(-1, result.shape[-1])[:frames]

    def posteriors(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(samples,) float32 at 22.05 kHz -> note (frames, 88), onset (frames, 88), contour (frames, 264)."""
        results = self.session.run(list(self.outputs), {"serving_default_input_2:0": self.windows(audio)})
        return tuple(self.unwrap(result, len(audio)) for result in results)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """All windows of all clips go through the network in one call."""
        frames = encoder_frame_count(waveform.shape[-1])
        clips = [soxr.resample(clip[: int(length)], 16000, self.sample_rate, quality="HQ")
                 for clip, length in zip(waveform.float().cpu().numpy(), lengths.tolist())]
        windows = [self.windows(clip) for clip in clips]
        results = self.session.run(list(self.outputs), {"serving_default_input_2:0": np.concatenate(windows)})
        bounds = np.cumsum([0] + [len(clip_windows) for clip_windows in windows])
        out = []
        for index, clip in enumerate(clips):
            parts = [self.unwrap(result[bounds[index]: bounds[index + 1]], len(clip)) for result in results]
            features = torch.from_numpy(np.concatenate(parts, axis=1))
            if features.shape[0] == 0:
                features = torch.zeros(1, self.feature_size)
            times = frame_times(features.shape[0], 1000.0 * self.hop / self.sample_rate, 0.0, 1)
            out.append(interpolate_to_frames(features[None], times, frames)[0])
        return zero_past_end(torch.stack(out), lengths).to(waveform.device)
