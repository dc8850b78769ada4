"""Simulated robots for closing the loop. ``libero_protocol`` is the authors' LIBERO evaluation protocol without
LIBERO or ROS: importable and tested anywhere."""
