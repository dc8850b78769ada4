"""LeRobot-format dataset folders (codebase v2.x and v3.0), the format most public robot data ships in.

Read: ``meta/info.json`` (features, fps, path templates), the tasks (``meta/tasks.jsonl`` or
``meta/tasks.parquet``), every parquet file under ``data/`` (rows grouped by ``episode_index``, ordered by
``frame_index``). Camera features of dtype ``image`` are PNG/JPEG bytes inside the parquet (kept compressed) or
paths to image files; dtype ``video`` features are MP4 files decoded with OpenCV's bundled FFmpeg (one file per
episode in v2.x, several episodes per file with ``from_timestamp`` offsets in v3.0). Which codecs decode depends
on that FFmpeg build: H.264 and MPEG-4 do; AV1 (LeRobot's default) needs a build with an AV1 decoder, and the
report says so up front when a video cannot be decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightvla_ros.training.data import DataError, DataReport, EncodedFrames, Episode


@dataclass
class LeRobotConfig:
    """Which features are the cameras (model order), the state and the action. Defaults: every image/video
    feature in info.json order, ``observation.state`` and ``action``."""

    cameras: list[str] | None = None
    state: str | None = "observation.state"
    action: str = "action"

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None) -> "LeRobotConfig":
        raw = raw or {}
        cameras = raw.get("cameras")
        return cls(cameras=None if cameras is None else [str(c) for c in cameras],
                   state=raw.get("state", "observation.state"), action=str(raw.get("action", "action")))


def read_lerobot(root: Path, *, image_size: int | None, report: DataReport, config: LeRobotConfig | None = None) -> list[Episode]:
    import pyarrow.parquet as pq

    config = config or LeRobotConfig()
    info = json.loads((root / "meta" / "info.json").read_text())
    features: dict[str, Any] = info.get("features", {})
    cameras = config.cameras or [k for k, v in features.items() if v.get("dtype") in ("image", "video")]
    needed = [*cameras, config.action, *([config.state] if config.state else [])]
    unknown = [k for k in needed if k not in features]
    if unknown:
        raise DataError(f"{root}: feature(s) {unknown} not in meta/info.json; it has {sorted(features)}")
    if not cameras:
        raise DataError(f"{root}: no image or video features to use as cameras")
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise DataError(f"{root}: no parquet files under data/")
    tasks = _tasks(root)
    columns = ["episode_index", "frame_index", "timestamp", "task_index", config.action]
    columns += [config.state] if config.state else []
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
    videos = _VideoFrames(root, info, [c for c in cameras if features[c]["dtype"] == "video"], image_size, report)
    episodes = []
    for ep in np.unique(episode_index):
        idx = order[episode_index[order] == ep]
        name = f"episode_{int(ep)}"
        task_ids = {rows["task_index"][i] for i in idx}
        if len(task_ids) > 1:
            report.warn(name, f"{len(task_ids)} tasks within one episode; using the first frame's")
        instruction = tasks.get(rows["task_index"][idx[0]], "")
        if not instruction:
            report.error(name, f"task_index {rows['task_index'][idx[0]]} has no task text in meta/tasks")
        images = []
        for camera in cameras:
            if features[camera]["dtype"] == "image":
                images.append(EncodedFrames([_image_source(root, rows[camera][i], name, report) for i in idx]))
            else:
                images.append(videos.frames(camera, int(ep), [float(rows["timestamp"][i]) for i in idx], name))
        actions = _matrix([rows[config.action][i] for i in idx])
        states = _matrix([rows[config.state][i] for i in idx]) if config.state else None
        episodes.append(Episode(instruction, images, states, actions, name))
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
    """Frames of video features, decoded once per file and kept PNG-encoded at the model's input size."""

    def __init__(self, root: Path, info: dict[str, Any], keys: list[str], image_size: int | None, report: DataReport) -> None:
        self.root, self.info, self.keys, self.image_size, self.report = root, info, keys, image_size, report
        self.fps = float(info.get("fps", 0))
        self.version = str(info.get("codebase_version", "v2.1"))
        self.episodes = self._episode_table() if keys and self.version.startswith("v3") else {}
        self._decoded: dict[Path, list[bytes]] = {}

    def _episode_table(self) -> dict[int, dict[str, Any]]:
        import pyarrow.parquet as pq

        table: dict[int, dict[str, Any]] = {}
        for path in sorted((self.root / "meta" / "episodes").rglob("*.parquet")):
            data = pq.read_table(path).to_pylist()
            table.update({int(row["episode_index"]): row for row in data})
        return table

    def _location(self, key: str, episode: int) -> tuple[Path, float]:
        template = self.info["video_path"]
        if self.version.startswith("v3"):
            row = self.episodes.get(episode)
            if row is None:
                raise DataError(f"{self.root}: episode {episode} missing from meta/episodes")
            path = template.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"])
            return self.root / path, float(row[f"videos/{key}/from_timestamp"])
        chunk = episode // int(self.info.get("chunks_size", 1000))
        return self.root / template.format(episode_chunk=chunk, video_key=key, episode_index=episode), 0.0

    def frames(self, key: str, episode: int, timestamps: list[float], name: str) -> EncodedFrames:
        path, offset = self._location(key, episode)
        decoded = self._decode(path, key)
        index = [int(round((offset + t) * self.fps)) for t in timestamps]
        if not decoded or max(index) >= len(decoded):
            codec = self.info["features"][key].get("info", {}).get("video.codec", "unknown")
            self.report.error(name, f"{path.name}: {len(decoded)} frame(s) decoded, frame {max(index)} needed (codec {codec}; "
                                    "if OpenCV cannot decode it, re-encode with `ffmpeg -i IN -c:v libx264 OUT`)")
            return EncodedFrames([])
        return EncodedFrames([decoded[i] for i in index])

    def _decode(self, path: Path, key: str) -> list[bytes]:
        if path in self._decoded:
            return self._decoded[path]
        import cv2

        frames: list[bytes] = []
        if path.is_file():
            capture = cv2.VideoCapture(str(path))
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                if self.image_size is not None:
                    rgb = np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BICUBIC))
                frames.append(EncodedFrames.encode(rgb))
            capture.release()
        self._decoded[path] = frames
        return frames
