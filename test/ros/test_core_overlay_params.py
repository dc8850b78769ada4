"""Debug overlay rendering and the parameter table against config/lightvla.yaml."""

from pathlib import Path

import numpy as np
import yaml

from lightvla_ros.ros.core.overlay import KEPT_BORDER, render_token_overlay
from lightvla_ros.ros.core.params import PARAMS, SPECS, validate_value

CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'lightvla.yaml'


def test_overlay_highlights_kept_and_dims_pruned():
    images = [np.full((64, 48, 3), 200, np.uint8), np.full((32, 32, 3), 100, np.uint8)]
    kept = np.array([0, 4 + 3])  # image 0 cell (0,0); image 1 cell (1,1) with a 2x2 grid
    out = render_token_overlay(images, kept, patches_per_image=4, grid_size=2, tile=32)
    assert out.shape == (32, 32 + 4 + 32, 3) and out.dtype == np.uint8
    assert (out[8, 8] == 200).all()          # kept, interior
    assert (out[0, 0] == KEPT_BORDER).all()  # kept, outline
    assert (out[24, 24] == 60).all()         # pruned: dimmed to 30%
    assert (out[24, 36 + 24] == 100).all()   # image 1 kept cell (1, 1)
    assert (out[8, 36 + 8] == 30).all()      # image 1 pruned cell (0, 0)
    cropped = render_token_overlay(images, kept, 4, 2, center_crop=True, tile=32)
    assert cropped.shape == out.shape


def test_yaml_matches_declared_parameters():
    params = yaml.safe_load(CONFIG.read_text())['/**/lightvla_node']['ros__parameters']
    assert set(params) <= set(SPECS), set(params) - set(SPECS)
    for name, value in params.items():
        spec = SPECS[name]
        assert value == spec.default, name  # the file documents the built-in defaults
        assert validate_value(spec, value) == ''


def test_specs_are_described_and_runtime_ones_are_few():
    assert all(spec.description for spec in PARAMS)
    runtime = {spec.name for spec in PARAMS if not spec.read_only}
    assert {'pruning', 'max_kept_tokens', 'debug_image', 'publish_actions'} <= runtime
    assert 'checkpoint' not in runtime and 'camera_topics' not in runtime


def test_validation_of_choices_and_ranges():
    assert 'not in' in validate_value(SPECS['pruning'], 'bogus')
    assert validate_value(SPECS['pruning'], 'none') == ''
    assert validate_value(SPECS['camera_types'], ['raw', 'jpeg'])
    assert validate_value(SPECS['max_kept_tokens'], -1)
