"""LeRobot-format dataset folders (codebase v2.x and v3.0), the format most public robot data ships in.

Read: ``meta/info.json`` (features, fps, path templates), the tasks (``meta/tasks.jsonl`` or
``meta/tasks.parquet``), every parquet file under ``data/`` (rows grouped by ``episode_index``, ordered by
``frame_index``). Camera features of dtype ``image`` are PNG/JPEG bytes inside the parquet (kept compressed) or
paths to image files; dtype ``video`` features are MP4 files (AV1, LeRobot's default, H.264 or HEVC) decoded
frame-exactly with PyAV (:mod:`lightvla_ros.training.video`): one file per episode and camera in v2.x (the
``video_path`` template), several episodes per file in v3.0, located by ``meta/episodes``' timestamps.

Which feature feeds which model input is chosen by :func:`choose_features` and printed with the data report on
every run: the data config's ``cameras`` / ``state`` / ``action`` (:data:`EXAMPLE_CONFIG`), else a rule on the
feature names. What the rule cannot decide fails with the dataset's features and the mapping to write.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightvla_ros.training.data import DataError, DataReport, EncodedFrames, Episode, camera_roles

EXAMPLE_CONFIG = """\
# Feature mapping for `lightvla train --data LEROBOT_DATASET --data-config this.yaml`; every entry is optional.
# Without one: cameras whose name contains wrist/hand/gripper are wrist cameras and come after the third-person
# one, the state is observation.state and the action is action. What was chosen is printed on every run.
cameras: [observation.images.front, observation.images.wrist]  # the model's images in order: third-person, wrist
state: observation.state      # the robot state (proprio) feature; null: train without a state
action: action
"""

CONFIG_KEYS = ("cameras", "state", "action")
DEFAULT_STATE = "observation.state"
DEFAULT_ACTION = "action"
WRIST_NAME = re.compile(r"wrist|hand|gripper", re.IGNORECASE)
VISUAL_TYPES = ("image", "video")
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
DECODE_THREADS = min(8, os.cpu_count() or 1)  # video files decoded at once


@dataclass
class LeRobotConfig:
    """The feature mapping from a data config. ``cameras`` None: chosen by name; ``state`` "": automatic, None:
    no state; ``action`` "": ``action``."""

    cameras: list[str] | None = None
    state: str | None = ""
    action: str = ""

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None, source: str | Path | None = None) -> "LeRobotConfig":
        raw = raw or {}
        if not isinstance(raw, dict) or set(raw) - set(CONFIG_KEYS):
            extra = sorted(set(raw) - set(CONFIG_KEYS)) if isinstance(raw, dict) else raw
            raise DataError(f"{source}: a LeRobot data config takes only {list(CONFIG_KEYS)}, got {extra}; for example:\n"
                            f"{EXAMPLE_CONFIG}")
        cameras = raw.get("cameras")
        state = raw["state"] if "state" in raw else ""
        return cls(cameras=None if cameras is None else [str(c) for c in cameras],
                   state=None if state is None else str(state), action=str(raw.get("action") or ""))


@dataclass
class FeatureChoice:
    """The features feeding the model: cameras in model order, the state (None: none) and the action."""

    cameras: list[str]
    state: str | None
    action: str


def choose_features(features: dict[str, Any], config: LeRobotConfig, num_images: int | None, report: DataReport,
                    root: Path) -> FeatureChoice:
    """Apply the data config, else the naming rule; record each choice in the report or fail with the mapping to write."""
    visual = [k for k, v in features.items() if v.get("dtype") in VISUAL_TYPES]
    numeric = [k for k, v in features.items() if v.get("dtype") not in (*VISUAL_TYPES, "string") and k not in BOOKKEEPING]

    def fail(problem: str) -> DataError:
        return DataError(_mapping_help(root, problem, features, visual, numeric, num_images))

    if config.cameras is not None:
        wrong = [c for c in config.cameras if c not in visual]
        if wrong:
            raise fail(f"camera feature(s) {wrong} from the data config are not image/video features of this dataset")
        if num_images is not None and len(config.cameras) != num_images:
            raise fail(f"the data config names {len(config.cameras)} camera(s), the model takes {num_images}")
        cameras, why = config.cameras, ["from the data config"] * len(config.cameras)
    else:
        cameras, why = _cameras_by_name(visual, num_images, fail)
    for role, key, reason in zip(camera_roles(len(cameras)), cameras, why):
        report.chose(f"{role}: {key} ({_describe(features[key])}; {reason})")
    unused = [k for k in visual if k not in cameras]
    if unused:
        report.chose(f"not used: {', '.join(unused)}")

    action = config.action or DEFAULT_ACTION
    if action not in numeric:
        raise fail(f"no action feature {action!r}")
    state = config.state
    if state == "":
        candidates = [k for k in numeric if k != action and k.startswith("observation.")]
        if DEFAULT_STATE in features:
            state = DEFAULT_STATE
        elif candidates:
            raise fail(f"no {DEFAULT_STATE!r} feature; is one of {candidates} the robot state?")
        else:
            state = None
    elif state is not None and state not in numeric:
        raise fail(f"state feature {state!r} from the data config is not a numeric feature of this dataset")
    source = "from the data config" if config.state != "" else "by name"
    report.chose(f"state: {state} ({_describe(features[state])}; {source})" if state else
                 f"state: none ({'the data config says null' if config.state is None else 'the dataset has no state feature'})")
    report.chose(f"action: {action} ({_describe(features[action])})")
    return FeatureChoice(list(cameras), state, action)


def _cameras_by_name(visual: list[str], num_images: int | None, fail) -> tuple[list[str], list[str]]:
    """Third-person camera(s) first, then those whose name says wrist/hand/gripper; fails when that is ambiguous."""
    need = num_images if num_images is not None else len(visual)
    if not visual:
        raise fail("no image or video features to use as cameras")
    if len(visual) < need:
        raise fail(f"{len(visual)} camera feature(s), the model takes {need}")
    wrist = [k for k in visual if WRIST_NAME.search(k)]
    third = [k for k in visual if k not in wrist]
    if need == 1 and len(visual) == 1:
        return visual, ["the only camera"]
    if need == 1 and len(third) == 1:
        return third, ["the only camera whose name does not say wrist/hand/gripper"]
    if need == 2 and len(third) == 1 and len(wrist) == 1:
        return [third[0], wrist[0]], ["its name does not say wrist/hand/gripper", "its name says wrist/hand/gripper"]
    raise fail(f"cannot tell from the names which of the {len(visual)} camera(s) {visual} are the model's {need} "
               f"({' and '.join(camera_roles(need))})")


def _describe(feature: dict[str, Any]) -> str:
    text = f"{feature.get('dtype')} {list(feature.get('shape', []))}"
    codec = feature.get("info", {}).get("video.codec") if feature.get("dtype") == "video" else None
    return f"{text} {codec}" if codec else text


def _mapping_help(root: Path, problem: str, features: dict[str, Any], visual: list[str], numeric: list[str],
                  num_images: int | None) -> str:
    """The problem, every feature of the dataset, and the data config that would fix it (a best guess to edit)."""
    wrist = [k for k in visual if WRIST_NAME.search(k)]
    guess = ([k for k in visual if k not in wrist] + wrist)[: num_images or len(visual)]
    state = DEFAULT_STATE if DEFAULT_STATE in features else next((k for k in numeric if k.startswith("observation.")), None)
    action = DEFAULT_ACTION if DEFAULT_ACTION in features else next((k for k in numeric if k != state), DEFAULT_ACTION)
    width = max((len(k) for k in features), default=0)
    lines = [f"{root}: {problem}.", "The dataset's features (meta/info.json):"]
    lines += [f"  {key:<{width}}  {_describe(value)}" for key, value in features.items() if key not in BOOKKEEPING]
    roles = " then ".join(camera_roles(len(guess))) if guess else "third-person first"
    lines += ["Write the mapping in a YAML file, edit it to what each feature is, and pass it with --data-config FILE:",
              f"  cameras: [{', '.join(guess)}]  # the model's images in order: {roles}",
              f"  state: {state or 'null'}  # the robot state; null: train without one",
              f"  action: {action}"]
    return "\n".join(lines)


def read_lerobot(root: Path, *, image_size: int | None, report: DataReport, config: LeRobotConfig | None = None,
                 num_images: int | None = None) -> list[Episode]:
    import pyarrow.parquet as pq

    info = json.loads((root / "meta" / "info.json").read_text())
    features: dict[str, Any] = info.get("features", {})
    choice = choose_features(features, config or LeRobotConfig(), num_images, report, root)
    cameras = choice.cameras
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise DataError(f"{root}: no parquet files under data/")
    tasks = _tasks(root)
    columns = ["episode_index", "frame_index", "timestamp", "task_index", choice.action]
    columns += [choice.state] if choice.state else []
    columns += [c for c in cameras if features[c]["dtype"] == "image"]
    rows: dict[str, list] = {c: [] for c in columns}
    for path in files:
        table = pq.read_table(path)
        absent = [c for c in columns if c not in table.column_names]
        if absent:
            raise DataError(f"{path}: column(s) {absent} missing (has {table.column_names})")
        for c in columns:
            rows[c] += table.column(c).to_pylist()
    episode_index = np.asarray(rows["episode_index"])
    order = np.lexsort((np.asarray(rows["frame_index"]), episode_index))
    videos = _VideoFrames(root, info, [c for c in cameras if features[c]["dtype"] == "video"], image_size)
    episodes: list[Episode] = []
    decoding: list[tuple[int, int, str, Future]] = []  # (episode, camera position, key, frames being decoded)
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:  # FFmpeg, resizing and PNG run without the GIL
        for ep in np.unique(episode_index):
            idx = order[episode_index[order] == ep]
            name = f"episode_{int(ep)}"
            task_ids = {rows["task_index"][i] for i in idx}
            if len(task_ids) > 1:
                report.warn(name, f"{len(task_ids)} tasks within one episode; using the first frame's")
            instruction = tasks.get(rows["task_index"][idx[0]], "")
            if not instruction:
                report.error(name, f"task_index {rows['task_index'][idx[0]]} has no task text in meta/tasks")
            images: list[EncodedFrames] = []
            for camera in cameras:
                if features[camera]["dtype"] == "image":
                    images.append(EncodedFrames([_image_source(root, rows[camera][i], name, report) for i in idx]))
                else:
                    times = [float(rows["timestamp"][i]) for i in idx]
                    images.append(EncodedFrames([]))
                    decoding.append((len(episodes), len(images) - 1, camera, pool.submit(videos.frames, camera, int(ep), times)))
            actions = _matrix([rows[choice.action][i] for i in idx])
            states = _matrix([rows[choice.state][i] for i in idx]) if choice.state else None
            episodes.append(Episode(instruction, images, states, actions, name))
        for e, k, camera, frames in decoding:
            try:
                episodes[e].images[k] = frames.result()
            except DataError as exc:
                report.error(episodes[e].name, f"camera {camera}: {exc}")
    return episodes


def _matrix(values: list) -> np.ndarray:
    return np.asarray([np.asarray(v, dtype=np.float64).reshape(-1) for v in values], dtype=np.float32)


def _tasks(root: Path) -> dict[int, str]:
    jsonl = root / "meta" / "tasks.jsonl"
    if jsonl.is_file():
        entries = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        return {int(e["task_index"]): str(e["task"]) for e in entries}
    table_path = root / "meta" / "tasks.parquet"
    if table_path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(table_path).to_pydict()
        text_column = "task" if "task" in table else next((k for k, v in table.items() if v and isinstance(v[0], str)), None)
        if text_column is not None and "task_index" in table:
            return {int(i): str(t) for i, t in zip(table["task_index"], table[text_column])}
    raise DataError(f"{root}: no readable meta/tasks.jsonl or meta/tasks.parquet (needed for the instructions)")


def _image_source(root: Path, value: Any, name: str, report: DataReport) -> bytes | Path:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str):
        for candidate in (Path(value), root / value):
            if candidate.is_file():
                return candidate
    report.error(name, f"image {value!r} is neither embedded bytes nor an existing file")
    return b""


class _VideoFrames:
    """Frames of video features, decoded per episode and kept PNG-encoded at the model's input size."""

    def __init__(self, root: Path, info: dict[str, Any], keys: list[str], image_size: int | None) -> None:
        self.root, self.info, self.image_size = root, info, image_size
        if keys and not info.get("video_path"):
            raise DataError(f"{root}: video features {keys} but no video_path template in meta/info.json")
        self.fps = float(info.get("fps", 0))
        self.version = str(info.get("codebase_version", "v2.1"))
        self.episodes = self._episode_table() if keys and self.version.startswith("v3") else {}

    def _episode_table(self) -> dict[int, dict[str, Any]]:
        import pyarrow.parquet as pq

        table: dict[int, dict[str, Any]] = {}
        for path in sorted((self.root / "meta" / "episodes").rglob("*.parquet")):
            data = pq.read_table(path).to_pylist()
            table.update({int(row["episode_index"]): row for row in data})
        return table

    def _location(self, key: str, episode: int) -> tuple[Path, float, float | None]:
        """The file holding ``episode`` of camera ``key``, and the episode's start and end time in it."""
        template = self.info["video_path"]
        if self.version.startswith("v3"):
            row = self.episodes.get(episode)
            if row is None or row.get(f"videos/{key}/file_index") is None or row.get(f"videos/{key}/from_timestamp") is None:
                raise DataError(f"episode {episode} has no videos/{key}/* entry in meta/episodes")
            path = template.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"])
            end = row.get(f"videos/{key}/to_timestamp")
            return self.root / path, float(row[f"videos/{key}/from_timestamp"]), None if end is None else float(end)
        chunk = episode // int(self.info.get("chunks_size", 1000))
        return self.root / template.format(episode_chunk=chunk, video_key=key, episode_index=episode), 0.0, None

    def frames(self, key: str, episode: int, timestamps: list[float]) -> EncodedFrames:
        from lightvla_ros.training.video import decode_at

        if self.fps <= 0:
            raise DataError("meta/info.json has no fps, needed to locate video frames")
        path, start, end = self._location(key, episode)
        times = [start + t for t in timestamps]
        if end is not None and max(times) > end + 0.5 / self.fps:
            raise DataError(f"{path}: frame times reach {max(times):.3f} s, past the episode's to_timestamp {end:.3f} s")
        return EncodedFrames(decode_at(path, times, self.fps, self._encode))

    def _encode(self, rgb: np.ndarray) -> bytes:
        if self.image_size is not None and rgb.shape[:2] != (self.image_size, self.image_size):
            rgb = np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BICUBIC))
        return EncodedFrames.encode(rgb)
