"""LeRobot video cameras: every decoded frame is the right one (AV1, LeRobot's default, and H.264), after seeking
into multi-episode v3.0 files and in the v2.1 one-file-per-episode layout; errors name the camera and the file."""

from __future__ import annotations

import numpy as np
import pytest
from lerobot_support import barcode, barcode_episodes, read_barcode, write_lerobot

from lightvla_ros.training.data import DataError, DataReport, check_episodes, read_dataset
from lightvla_ros.training.video import decode_at, encode_video

CODECS = ["libsvtav1", "libx264"]
KEYS = ["observation.images.front", "observation.images.wrist"]


@pytest.fixture(autouse=True)
def quiet_encoder(monkeypatch):
    monkeypatch.setenv("SVT_LOG", "1")  # SVT-AV1 prints its configuration at info level


def test_barcode_frames_read_back():
    for frame, camera in [(0, 0), (1, 1), (200, 1), (255, 0)]:
        assert read_barcode(barcode(frame, camera)) == (frame, camera)


@pytest.mark.parametrize("codec", CODECS)
def test_decode_at_returns_the_frames_shown_at_the_requested_times(tmp_path, codec):
    path = encode_video(tmp_path / "v.mp4", [barcode(n) for n in range(120)], 10, codec, g="12")
    wanted = [73, 12, 12, 119, 40, 41, 42]  # any order, repeats, across key frames, up to the last frame
    frames = decode_at(path, [n / 10 for n in wanted], 10)
    assert [read_barcode(f)[0] for f in frames] == wanted
    assert np.abs(frames[0].astype(int) - barcode(73)).mean() < 3  # close to the source, not just the right number


@pytest.mark.parametrize("codec", CODECS)
def test_decode_at_fails_on_times_without_a_frame(tmp_path, codec):
    path = encode_video(tmp_path / "v.mp4", [barcode(n) for n in range(20)], 10, codec)
    with pytest.raises(DataError, match=r"v.mp4: no frame at 2 of 3 requested time\(s\), first 0.150 s .*codec (libdav1d|h264)"):
        decode_at(path, [0.5, 0.15, 2.5], 10)  # between two frames, and past the end


def _read(root, num_images=2):
    report = DataReport(str(root))
    episodes = read_dataset(root, data_config=None, image_size=None, report=report, num_images=num_images)
    return episodes, report


def _assert_frames_are_the_written_ones(episodes, written):
    assert [e.instruction for e in episodes] == [e.instruction for e in written]
    for got, expected in zip(episodes, written):
        np.testing.assert_array_equal(got.actions, expected.actions)
        np.testing.assert_array_equal(got.states, expected.states)
        for camera, (frames, source) in enumerate(zip(got.images, expected.images)):
            assert len(frames) == len(source)
            shown = [read_barcode(np.asarray(frame)) for frame in frames]
            assert shown == [read_barcode(frame) for frame in source], f"{got.name} camera {camera}"


@pytest.mark.parametrize("codec", CODECS)
def test_v30_multi_episode_files_decode_frame_exactly(tmp_path, codec):
    """LeRobot 0.4's layout and encoder settings; 5 episodes in two files per camera, located by from_timestamp."""
    written = barcode_episodes([7, 11, 5, 9, 6])
    root = write_lerobot(tmp_path / "ds", written, KEYS, codec=codec, episodes_per_file=3)
    episodes, report = _read(root)
    assert not report.errors
    _assert_frames_are_the_written_ones(episodes, written)


def test_v21_one_file_per_episode_and_camera(tmp_path):
    written = barcode_episodes([6, 8, 4])
    root = write_lerobot(tmp_path / "ds", written, KEYS, version="v2.1", codec="libx264")
    assert (root / "videos" / "chunk-000" / KEYS[1] / "episode_000002.mp4").is_file()
    episodes, report = _read(root)
    assert not report.errors
    _assert_frames_are_the_written_ones(episodes, written)


def test_video_frames_are_resized_to_the_model_input(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([4]), KEYS)
    report = DataReport(str(root))
    episodes = read_dataset(root, data_config=None, image_size=96, report=report, num_images=2)
    frame = np.asarray(episodes[0].images[1][3])
    assert frame.shape == (96, 96, 3) and read_barcode(frame) == (3, 1)


def test_a_missing_video_names_the_camera_and_the_file(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([5, 5]), KEYS, version="v2.1", codec="libx264")
    (root / "videos" / "chunk-000" / KEYS[1] / "episode_000001.mp4").unlink()
    episodes, report = _read(root)
    assert len(report.errors) == 1
    assert report.errors[0].startswith(f"episode_1: camera {KEYS[1]}: ")
    assert report.errors[0].endswith(f"videos/chunk-000/{KEYS[1]}/episode_000001.mp4 does not exist")
    good = check_episodes(episodes, report, num_images=2, state_dim=8, action_dim=7, skip_bad=True)
    assert [e.name for e in good] == ["episode_0"]


def test_an_undecodable_video_names_the_camera_and_the_file(tmp_path):
    root = write_lerobot(tmp_path / "ds", barcode_episodes([5]), KEYS)
    video = root / "videos" / KEYS[0] / "chunk-000" / "file-000.mp4"
    video.write_bytes(b"not a video at all")
    _, report = _read(root)
    assert len(report.errors) == 1 and report.errors[0].startswith(f"episode_0: camera {KEYS[0]}: {video}: cannot decode")
