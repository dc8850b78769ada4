#!/usr/bin/env python3
"""Run the LightVLA benchmark from a checkout without ``-m``: ``python benchmarks/run.py [options]``.

Same as ``python -m benchmarks``; see ``docs/performance.md``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.commands import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
