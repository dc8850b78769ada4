"""``python -m experiments.pruning_study [options]``: run the pruning study, or re-render its report."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from experiments.pruning_study.study import FULL_OUT, PUBLISHED_REPORT, QUICK_OUT, REPORT_NAME, StudyConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.pruning_study",
                                description="The CPU pruning study on the procedural reaching task (docs/pruning-study.md).")
    p.add_argument("--out", help=f"working folder: checkpoints, metrics, results.json (default {FULL_OUT}, "
                   f"or {QUICK_OUT} with --quick)")
    p.add_argument("--report", help=f"where to write the report, its images going to the img/ folder beside it (default "
                   f"OUT/{REPORT_NAME}; pass {PUBLISHED_REPORT} to update the published one)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a much shorter run to check the pipeline (numbers not meaningful)")
    p.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    p.add_argument("--variant", default="distinct", choices=["distinct", "confusable"], help="toy task variant (see toy.py)")
    p.add_argument("--render-only", action="store_true", help="rewrite the report from OUT/results.json (no training)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.pruning_study.study import render_from_results, run_study

    args = build_parser().parse_args(argv)
    config = StudyConfig(out=args.out or "", report=args.report or "", seeds=args.seeds, quick=args.quick,
                         workers=args.workers, variant=args.variant)
    if args.render_only:
        render_from_results(config)
    else:
        run_study(config)
    print(f"report: {config.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
