"""The chunk-execution study (``python -m experiments.chunk_execution``): which way of executing action chunks
works best in a closed loop, through ``lightvla_node`` on sim time, with inference latency injected.

See :mod:`experiments.chunk_execution.study` and ``docs/chunk-execution.md``.
"""
