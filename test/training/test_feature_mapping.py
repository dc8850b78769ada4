"""Which dataset feature feeds which model input: chosen by the data config or by name, printed on every run, and
what cannot be decided fails with the dataset's features and the mapping to write."""

from __future__ import annotations

import pytest
import yaml
from lerobot_support import barcode_episodes, read_barcode, write_lerobot

from lightvla_ros.cli import main as cli_main
from lightvla_ros.training.data import DataError, DataReport, read_dataset
from lightvla_ros.training.lerobot import EXAMPLE_CONFIG as LEROBOT_EXAMPLE
from lightvla_ros.training.rosbag import EXAMPLE_CONFIG as ROSBAG_EXAMPLE


@pytest.fixture(autouse=True)
def quiet_encoder(monkeypatch):
    monkeypatch.setenv("SVT_LOG", "1")


def _read(root, config=None, num_images=2):
    report = DataReport(str(root))
    return read_dataset(root, data_config=config, image_size=None, report=report, num_images=num_images), report


def _yaml(tmp_path, text: str):
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


def test_a_wrist_camera_listed_first_is_still_the_second_image(tmp_path):
    # camera 0 of the written episodes is the wrist view here, listed first in meta/info.json
    root = write_lerobot(tmp_path / "ds", barcode_episodes([3]), ["observation.images.wrist_cam", "observation.images.top"],
                         dtype="image")
    episodes, report = _read(root)
    assert [read_barcode(episodes[0].images[k][0])[1] for k in (0, 1)] == [1, 0]  # third-person (top) first
    assert report.mapping[:2] == [
        "third-person camera: observation.images.top (image [64, 64, 3]; its name does not say wrist/hand/gripper)",
        "wrist camera: observation.images.wrist_cam (image [64, 64, 3]; its name says wrist/hand/gripper)"]
    assert report.mapping[2:] == ["state: observation.state (float32 [8]; by name)", "action: action (float32 [7])"]
    text = report.text(1, 3)
    assert "mapping (change it with --data-config" in text and "    wrist camera: observation.images.wrist_cam" in text


def test_three_cameras_fail_with_the_features_and_the_mapping_to_write(tmp_path):
    keys = ["observation.images.cam_high", "observation.images.cam_left_wrist", "observation.images.cam_right_wrist"]
    root = write_lerobot(tmp_path / "ds", barcode_episodes([3], cameras=3), keys)
    with pytest.raises(DataError) as info:
        _read(root)
    text = str(info.value)
    assert "cannot tell from the names which of the 3 camera(s)" in text and "third-person camera and wrist camera" in text
    assert "observation.images.cam_left_wrist   video [64, 64, 3] av1" in text and "observation.state" in text
    assert "--data-config FILE" in text
    suggested = yaml.safe_load("\n".join(line[2:] for line in text.splitlines() if line.startswith("  ") and ":" in line
                                         and line.split(":")[0].strip() in ("cameras", "state", "action")))
    assert suggested == {"cameras": keys[:2], "state": "observation.state", "action": "action"}
    episodes, report = _read(root, _yaml(tmp_path, "cameras: [observation.images.cam_high, observation.images.cam_right_wrist]\n"))
    assert [read_barcode(episodes[0].images[k][0])[1] for k in (0, 1)] == [0, 2]
    assert report.mapping[1].startswith("wrist camera: observation.images.cam_right_wrist (video [64, 64, 3] av1; from the data config)")
    assert report.mapping[2] == "not used: observation.images.cam_left_wrist"


def test_a_one_image_model_takes_the_third_person_camera(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([2]), ["observation.images.hand", "observation.images.scene"], dtype="image")
    episodes, report = _read(root, num_images=1)
    assert len(episodes[0].images) == 1 and read_barcode(episodes[0].images[0][0])[1] == 1
    assert report.mapping[1] == "not used: observation.images.hand"


def test_two_cameras_that_do_not_name_the_wrist_need_a_mapping(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([2]), ["observation.images.left", "observation.images.right"], dtype="image")
    with pytest.raises(DataError, match=r"cannot tell from the names which of the 2 camera\(s\)"):
        _read(root)


def test_a_state_under_another_name_fails_with_the_mapping(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([3]), ["observation.images.front", "observation.images.wrist"],
                         state_key="observation.joint_positions", dtype="image")
    with pytest.raises(DataError) as info:
        _read(root)
    text = str(info.value)
    assert "no 'observation.state' feature; is one of ['observation.joint_positions'] the robot state?" in text
    assert "  state: observation.joint_positions  # the robot state; null: train without one" in text
    episodes, report = _read(root, _yaml(tmp_path, "state: observation.joint_positions\n"))
    assert episodes[0].states.shape == (3, 8) and "state: observation.joint_positions (float32 [8]; from the data config)" in report.mapping
    episodes, report = _read(root, _yaml(tmp_path, "state: null\n"))
    assert episodes[0].states is None and "state: none (the data config says null)" in report.mapping


def test_mapping_mistakes_are_explained(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([2]), ["observation.images.front", "observation.images.wrist"], dtype="image")
    with pytest.raises(DataError, match=r"camera feature\(s\) \['camera/image_raw'\] from the data config are not image/video"):
        _read(root, _yaml(tmp_path, "cameras: [camera/image_raw, observation.images.wrist]\n"))
    with pytest.raises(DataError, match=r"the data config names 1 camera\(s\), the model takes 2"):
        _read(root, _yaml(tmp_path, "cameras: [observation.images.front]\n"))
    with pytest.raises(DataError, match=r"no action feature 'actions'"):
        _read(root, _yaml(tmp_path, "action: actions\n"))
    with pytest.raises(DataError, match=r"takes only \['cameras', 'state', 'action'\], got \['instruction'\]"):
        _read(root, _yaml(tmp_path, "instruction: instruction\n"))


def test_example_data_config_shows_both_forms(capsys):
    assert cli_main(["train", "--example-data-config"]) == 0
    both = capsys.readouterr().out
    assert ROSBAG_EXAMPLE in both and LEROBOT_EXAMPLE in both
    assert cli_main(["train", "--example-data-config", "lerobot"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"cameras": ["observation.images.front", "observation.images.wrist"],
                                                       "state": "observation.state", "action": "action"}
    assert cli_main(["train", "--example-data-config", "rosbag"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stop_words"] == ["stop"]
