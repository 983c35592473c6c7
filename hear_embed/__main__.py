"""``python -m hear_embed``: the ``hear-embed`` command."""
import sys

from hear_embed.cli import main

sys.exit(main())
