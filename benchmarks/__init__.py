"""Benchmarks: how much faster pruning makes the model, how close that is to the hardware's limits, and what the
ROS node adds on top (``python -m benchmarks``, or ``python benchmarks/run.py``, from a checkout).

Not part of the installed package: what the robot needs from here (torch.compile with kept-token buckets, the
allocator setting) is in :mod:`lightvla_ros.model.acceleration`; the model shapes are in
:mod:`lightvla_ros.model.presets`.
"""
