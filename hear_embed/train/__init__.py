"""Pretraining of the HEAR models: stage 1 (Acoustic Tokenizer by distillation) and stage 2 (masked audio modeling).

Entry points: ``python -m hear_embed.train.tokenizer_stage --config cfg.json`` and
``python -m hear_embed.train.mam_stage --config cfg.json`` (single process, or under ``torchrun`` for DDP).
"""
