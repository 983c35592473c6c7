"""hear_embed: the HEAR audio encoder (Kawano & Sasaki, 2026) behind the HEAR benchmark API."""
