"""`lightvla record` on a private ROS domain: the demo camera (two cameras and a state) plus an operator giving
instructions and a teleoperator's actions -> a rosbag2 that Ctrl-C closes cleanly -> `lightvla train`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_support import stop_process

from lightvla_ros.cli import main as cli_main
from lightvla_ros.training.data import DataReport, read_dataset

pytestmark = pytest.mark.ros

TEST_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = TEST_ROOT.parent
ACTION_PERIOD = 0.1  # s
STEPS_PER_EPISODE = 15


def _python_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), PYTHONUNBUFFERED="1")


@pytest.fixture
def ros_domain():
    pytest.importorskip("rclpy", reason="rclpy not installed: nothing to record from")
    sys.path.insert(0, str(TEST_ROOT))
    from ros_support import isolate_ros_environment

    return isolate_ros_environment()


def test_record_a_teleoperated_session_then_train_on_it(tmp_path, ros_domain, capsys):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float32MultiArray, String

    from lightvla_ros.ros.commands import INSTRUCTION_QOS
    from lightvla_ros.ros.entry import spin_until

    bag = tmp_path / "session"
    env = _python_env()
    camera = subprocess.Popen([sys.executable, "-m", "lightvla_ros.ros.demo_camera", "--ros-args", "-p", "rate:=30.0", "-p", "size:=64"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    recorder = subprocess.Popen([sys.executable, "-m", "lightvla_ros.cli", "record", str(bag), "--duration", "120"],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    operator = rclpy.create_node("record_test_operator", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(operator)
    try:
        instruction = operator.create_publisher(String, "/instruction", INSTRUCTION_QOS)
        action = operator.create_publisher(Float32MultiArray, "/action", 10)
        assert spin_until(executor, lambda: instruction.get_subscription_count() > 0 and action.get_subscription_count() > 0
                          or recorder.poll() is not None, 60.0), "the recorder never subscribed"
        spin_until(executor, lambda: False, 1.0)  # the camera's first frames reach the recorder
        step = 0
        for text in ("pick up the cup", "stop", "place the cup", ""):
            instruction.publish(String(data=text))
            for _ in range(STEPS_PER_EPISODE if text not in ("", "stop") else 3):  # after a stop: actions not trained
                action.publish(Float32MultiArray(data=np.full(7, step % 10 / 10, np.float32).tolist()))
                step += 1
                spin_until(executor, lambda: False, ACTION_PERIOD)
        spin_until(executor, lambda: False, 0.5)
    finally:
        operator.destroy_node()
        context.try_shutdown()
        stop_process(recorder)  # Ctrl-C
        stop_process(camera)
    output = recorder.stdout.read()
    assert recorder.returncode == 0, output
    assert "recording /camera/image_raw, /wrist_camera/image_raw, /instruction, /state, /action into" in output
    assert f"wrote {bag}:" in output and "/instruction 4, /state" in output and f"/action {step}" in output
    assert (bag / "metadata.yaml").is_file() and (bag / "session.mcap").is_file()

    report = DataReport(str(bag))
    episodes = read_dataset(bag, data_config=None, image_size=None, report=report, num_images=2)
    assert [e.instruction for e in episodes] == ["pick up the cup", "place the cup"]
    for episode in episodes:
        assert abs(len(episode) - STEPS_PER_EPISODE) <= 1  # discovery may lose the first action of a session
        assert len(episode.images) == 2 and episode.states.shape[1] == 8 and episode.actions.shape[1] == 7

    tiny = Path(os.environ.get("LIGHTVLA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures")) / "oft-tiny-libero"
    if not (tiny / "config.json").is_file():
        from lightvla_ros.model.tiny import make_tiny_checkpoint

        tiny = make_tiny_checkpoint(tmp_path / "tiny")
    capsys.readouterr()
    assert cli_main(["train", "--checkpoint", str(tiny), "--data", str(bag), "--out", str(tmp_path / "run"), "--steps", "2",
                     "--batch-size", "2", "--lora-rank", "4", "--save-every", "0", "--num-workers", "0", "--device", "cpu",
                     "--no-progress"]) == 0
    log = capsys.readouterr().err
    assert "2 usable episode(s)" in log and "0 error(s)" in log
    assert (tmp_path / "run" / "final" / "dataset_statistics.json").is_file()


def test_record_needs_a_new_folder(tmp_path, ros_domain, capsys):
    assert cli_main(["record", str(tmp_path)]) == 2
    assert "exists; rosbag2 writes a new folder" in capsys.readouterr().err


def test_record_stops_after_duration_and_names_silent_topics(tmp_path, ros_domain, capsys):
    config = tmp_path / "topics.yaml"
    config.write_text("cameras: [nobody/image]\ninstruction: nobody/instruction\nactions: [{topic: nobody/action}]\n")
    started = time.monotonic()
    assert cli_main(["record", str(tmp_path / "bag"), "--data-config", str(config), "--storage", "sqlite3", "--duration", "1"]) == 1
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert "/nobody/image (no publisher yet) | /nobody/instruction (no publisher yet) | /nobody/action (no publisher yet)" in err
    assert "nothing received on /nobody/image, /nobody/instruction, /nobody/action" in err
    assert (tmp_path / "bag" / "metadata.yaml").is_file() and (tmp_path / "bag" / "bag.db3").is_file()


def test_record_starts_without_torch():
    code = "import sys; from lightvla_ros.cli import build_parser; build_parser('record'); print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_python_env(), capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr
