"""Training of the HEAR models: stage 1 (Acoustic Tokenizer by distillation), stage 2 (masked audio modeling) and
stage 3 (fine-tuning a classifier end to end), all on one runner (``runner.py``: checkpoints, exact resume, DDP).

Entry points: ``python -m hear_embed.train.tokenizer_stage --config cfg.json`` and
``python -m hear_embed.train.mam_stage --config cfg.json`` (single process, or under ``torchrun`` for DDP);
stage 3 on HEAR task folders: ``python -m eval finetune`` (config ``configs/finetune.json``).
"""
