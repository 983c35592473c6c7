"""The hear_embed evaluation harness: the HEAR benchmark protocol on a modern stack (``python -m eval``)."""
