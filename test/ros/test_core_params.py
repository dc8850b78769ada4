"""The typed node configuration (ROS-free)."""

import dataclasses

import pytest

from lightvla_ros.ros.core.params import PARAMS, SPECS, NodeConfig


def test_node_config_is_the_parameter_table():
    config = NodeConfig()
    assert [spec.name for spec in PARAMS] == [f.name for f in dataclasses.fields(NodeConfig)]
    assert SPECS['camera_topics'].default == list(config.camera_topics)  # ROS sees lists, the config tuples
    assert SPECS['pruning'].read_only is False and SPECS['checkpoint'].read_only is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dt = 0.1  # type: ignore[misc]


def test_node_config_from_parameter_values_and_run_time_changes():
    config = NodeConfig.from_values({'checkpoint': '/ckpt', 'camera_topics': ['a', 'b', 'c'], 'camera_types': [],
                                     'unknown': 1})
    assert config.camera_topics == ('a', 'b', 'c') and config.camera_kinds == ('raw',) * 3
    changed = config.updated({'max_kept_tokens': 64, 'pruning': 'none'})
    assert (changed.max_kept_tokens, changed.pruning, changed.checkpoint) == (64, 'none', '/ckpt')
    settings = changed.policy_settings()
    assert settings.max_kept_tokens == 64 and settings.num_images == 3 and settings.unnorm_key is None


def test_node_config_problems_are_sentences(tmp_path):
    assert 'no checkpoint configured' in NodeConfig().problem()
    assert 'does not exist' in NodeConfig(checkpoint=str(tmp_path / 'nope')).problem()
    assert 'camera_types has 1 entries' in NodeConfig(checkpoint=str(tmp_path), camera_types=('raw',)).problem()
    assert 'needs joint_names' in NodeConfig(checkpoint=str(tmp_path), action_space='joint').problem()
    assert "not in ['raw', 'compressed']" in NodeConfig(checkpoint=str(tmp_path), camera_types=('raw', 'jpeg')).problem()
    assert NodeConfig(checkpoint=str(tmp_path)).problem() == ''
