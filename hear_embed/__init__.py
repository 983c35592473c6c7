"""hear_embed: the HEAR audio encoder (Kawano & Sasaki, 2026) behind the HEAR benchmark API."""
from importlib.metadata import PackageNotFoundError, version

from hear_embed.api import get_scene_embeddings, get_timestamp_embeddings, load_model

try:
    __version__ = version("hear_embed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings", "__version__"]
