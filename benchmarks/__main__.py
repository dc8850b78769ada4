"""``python -m benchmarks [options]`` from a checkout (``--help`` lists them; see docs/performance.md)."""

import sys

from benchmarks.commands import main

sys.exit(main())
