#!/usr/bin/env python3
"""Run the LightVLA benchmark from a checkout: ``python benchmarks/run.py [lightvla bench options]``.

Same as ``lightvla bench``; see ``docs/performance.md``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightvla_ros.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
