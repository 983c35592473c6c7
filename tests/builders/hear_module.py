"""Source of a deterministic fake HEAR-API module, written to a temporary folder by the fake_module fixture."""
from __future__ import annotations

import textwrap

FAKE_MODULE = textwrap.dedent('''
    """A deterministic HEAR-API module for tests: frames of 160 samples through a fixed projection."""
    import torch

    CALLS = []  # one entry per get_*_embeddings call: the batch size
    FAIL_AT_CALL = None  # raise when this many calls have been made (simulates a killed run)


    class Model(torch.nn.Module):
        sample_rate = 16000

        def __init__(self, scale=1.0):
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.projection = torch.nn.Parameter(scale * torch.randn(160, 6, generator=generator))


    def load_model(model_file_path="", scale=1.0):
        return Model(scale=scale)


    def get_timestamp_embeddings(audio, model):
        if FAIL_AT_CALL is not None and len(CALLS) >= FAIL_AT_CALL:
            raise RuntimeError("simulated kill")
        CALLS.append(audio.shape[0])
        frames = audio[:, : audio.shape[1] // 160 * 160].reshape(audio.shape[0], -1, 160)
        embeddings = frames @ model.projection + torch.arange(frames.shape[1])[None, :, None] * 0.01
        timestamps = (torch.arange(frames.shape[1]) * 10.0 + 5.0).expand(audio.shape[0], -1)
        return embeddings, timestamps


    def get_scene_embeddings(audio, model):
        embeddings, _ = get_timestamp_embeddings(audio, model)
        return embeddings.mean(dim=1)
''')
