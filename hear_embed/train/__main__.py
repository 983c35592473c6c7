"""``python -m hear_embed.train {tokenizer,mam} --config cfg.json --out-dir DIR ...``: the two pretraining stages
(stage 3, fine-tuning, needs task folders: ``python -m eval finetune``)."""
from __future__ import annotations

import sys

from hear_embed.train import mam_stage, tokenizer_stage

STAGES = {"tokenizer": tokenizer_stage.main, "mam": mam_stage.main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m hear_embed.train {{{','.join(STAGES)}}} --config CFG.json --out-dir DIR [...]\n"
              "  tokenizer  stage 1: Acoustic Tokenizer (reconstruction + distillation + diversity)\n"
              "  mam        stage 2: masked audio modeling with the frozen tokenizer's codes\n"
              "stage 3, fine-tuning on HEAR task folders: python -m eval finetune --tasks-dir TASKS ...", file=sys.stderr)
        return 2
    return STAGES[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
