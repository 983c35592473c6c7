"""``python -m eval.bench``: see ``eval.bench``."""
import sys

from eval.bench.cli import main

sys.exit(main())
