"""The CPU pruning study (``python -m experiments.pruning_study``): does learned pruning keep what matters?

See :mod:`experiments.pruning_study.study` and ``docs/pruning-study.md``.
"""
