"""Where the shipped examples live; puts ``examples/`` on ``sys.path`` so the example
scripts (``domains.py``, ``quality.py``) import as modules."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRETRAINED = EXAMPLES / "pretrained"
QUICKSTART = EXAMPLES / "quickstart.yaml"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
