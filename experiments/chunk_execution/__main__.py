"""``python -m experiments.chunk_execution [options]``: run the chunk-execution study, or re-render its report."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from experiments.chunk_execution.study import FULL_OUT, PUBLISHED_REPORT, QUICK_OUT, REPORT_NAME, StudyConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.chunk_execution",
                                description="Closed-loop study of lightvla_node's chunk execution modes on a simulated "
                                            "reacher, on sim time with injected latency (docs/chunk-execution.md).")
    p.add_argument("--out", help=f"working folder: bag, checkpoints, results.json (default {FULL_OUT}, or {QUICK_OUT} "
                   "with --quick); a recording and training of the same budget found there is reused")
    p.add_argument("--report", help=f"where to write the report, its plot going to the img/ folder beside it (default "
                   f"OUT/{REPORT_NAME}; pass {PUBLISHED_REPORT} to update the published one)")
    p.add_argument("--quick", action="store_true", help="a short run (1-2 minutes) that checks the pipeline; numbers "
                   "not meaningful")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--render-only", action="store_true", help="rewrite the report from OUT/results.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = StudyConfig(out=args.out or "", report=args.report or "", quick=args.quick, seed=args.seed)
    if args.render_only:
        from experiments.chunk_execution.study import render_from_results

        render_from_results(config)
    else:
        from experiments.chunk_execution.loop import isolate_ros_domain
        from experiments.chunk_execution.study import run_study

        isolate_ros_domain()
        run_study(config)
    print(f"report: {config.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
