"""Where the tests find their data: the repository, the fixtures shipped in tests/fixtures, and the project's
shared folder (read-only data beside the repository), the one definition of each."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"  # shipped with the repository
PARITY_FIXTURES = FIXTURES / "official_parity"  # the authors' reference outputs, see its README.md
SHARED = Path(os.environ.get("HEAR_EMBED_SHARED", REPO.parent / "shared"))  # may be absent: tests needing it skip
