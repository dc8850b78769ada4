"""Episode boundaries in a recording follow the node's instruction rules: new text starts an episode, a repeat
continues it, and "" or a stop word ends it; a stop word is never trained as an instruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightvla_ros.training.data import DataReport, read_dataset
from lightvla_ros.training.rosbag import NODE_STOP_WORDS, BagConfig

CONFIG = """\
cameras: [camera/image_raw]
instruction: instruction
state: {topic: state}
actions: [{topic: action}]
"""


def _write_bag(path: Path, script: list[str | int]) -> Path:
    """A recording played from ``script``: a string is an instruction message, a number n an action step whose
    action (and frame, and state) all hold n."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.LATEST)
    types = typestore.types
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = {name: writer.add_connection(f"/{name}", msgtype, typestore=typestore) for name, msgtype in [
            ("instruction", "std_msgs/msg/String"), ("camera/image_raw", "sensor_msgs/msg/Image"),
            ("state", "std_msgs/msg/Float32MultiArray"), ("action", "std_msgs/msg/Float32MultiArray")]}
        now = 1.0
        for entry in script:
            if isinstance(entry, str):
                messages = [("instruction", types["std_msgs/msg/String"](data=entry))]
            else:
                rgb = np.full((8, 8, 3), entry, np.uint8)
                header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="camera")
                values = np.full(2, entry, np.float32)
                messages = [("camera/image_raw", types["sensor_msgs/msg/Image"](header=header, height=8, width=8, encoding="rgb8",
                                                                                  is_bigendian=0, step=24, data=rgb.reshape(-1))),
                            ("state", types["std_msgs/msg/Float32MultiArray"](layout=layout, data=values)),
                            ("action", types["std_msgs/msg/Float32MultiArray"](layout=layout, data=values))]
            for topic, msg in messages:
                now += 0.01
                writer.write(topics[topic], int(now * 1e9), typestore.serialize_cdr(msg, msg.__msgtype__))
    return path


def _episodes(bag: Path, config: Path) -> tuple[list[tuple[str, list[int]]], DataReport]:
    report = DataReport(str(bag))
    episodes = read_dataset(bag, data_config=config, image_size=None, report=report)
    return [(e.instruction, [int(a) for a in e.actions[:, 0]]) for e in episodes], report


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def test_the_default_stop_words_are_the_nodes():
    from lightvla_ros.ros.core.params import SPECS

    assert BagConfig.load(None).stop_words == NODE_STOP_WORDS == SPECS["stop_words"].default == ["stop"]


def test_stop_and_empty_end_episodes_and_are_never_trained(tmp_path, config):
    bag = _write_bag(tmp_path / "bag", ["pick up the cup", 1, 2, "stop", 3, 4, "place the cup", 5, "Stop.", 6,
                                        "open the drawer", 7, 8, "", 9])
    episodes, report = _episodes(bag, config)
    assert episodes == [("pick up the cup", [1, 2]), ("place the cup", [5]), ("open the drawer", [7, 8])]
    assert report.warnings == [f"{bag}: 4 action message(s) outside an episode (before the first instruction or after a stop) "
                               "were ignored"]
    assert 'instruction: /instruction (episodes end at "" and stop words [\'stop\'])' in report.mapping


def test_a_repeated_instruction_continues_the_episode(tmp_path, config):
    """`ros2 topic pub` republishes the instruction every second: the node keeps the task, so one episode."""
    bag = _write_bag(tmp_path / "bag", ["pick up the cup", 1, 2, "pick up the cup", 3, "Pick up the cup.", 4, "stop",
                                        "stop", "place it", 5, "place it", 6])
    episodes, _ = _episodes(bag, config)
    assert episodes == [("pick up the cup", [1, 2, 3, 4]), ("place it", [5, 6])]


def test_new_text_ends_the_episode_and_starts_the_next(tmp_path, config):
    bag = _write_bag(tmp_path / "bag", ["pick up the cup", 1, 2, "place the cup", 3])
    episodes, _ = _episodes(bag, config)
    assert episodes == [("pick up the cup", [1, 2]), ("place the cup", [3])]


def test_stop_words_come_from_the_data_config(tmp_path, config):
    config.write_text(CONFIG + "stop_words: [halt, 'abort now']\n")
    bag = _write_bag(tmp_path / "bag", ["pick up the cup", 1, "HALT", 2, "stop", 3, "abort  now", 4])
    episodes, _ = _episodes(bag, config)
    assert episodes == [("pick up the cup", [1]), ("stop", [3])]  # with other stop words, "stop" is an instruction
