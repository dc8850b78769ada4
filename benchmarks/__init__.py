"""Benchmarks: how much faster pruning makes the model, how close that is to the hardware's limits, and what the
ROS node adds on top (``lightvla bench``)."""
