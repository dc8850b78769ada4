"""Demonstrations recorded with ``ros2 bag record`` (MCAP or sqlite3), read with ``rosbags`` (no ROS needed).

The recording holds the node's own input topics (camera images, the instruction, the robot state) plus the
commanded actions. A small YAML file (:data:`EXAMPLE_CONFIG`) names the topics and maps messages to vectors.
Time steps are the messages of the first action topic; each takes the latest camera frames, state and other
action topics at or before it, exactly as the node pairs the latest observations at inference. A non-empty
instruction starts an episode; the empty string and the stop words end it, as they make the node go idle
(:class:`~lightvla_ros.ros.core.instructions.InstructionTracker`, the node's own rules: a repeat of the current
text continues the episode, and no stop word is ever trained as an instruction); a pause in the actions also
ends one. Camera frames are decoded by the node's own decoders, so training sees the pixels inference will.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from lightvla_ros.ros.core.images import ImageDecodeError, decode_image
from lightvla_ros.ros.core.instructions import InstructionEventKind, InstructionTracker
from lightvla_ros.ros.core.params import SPECS
from lightvla_ros.training.data import DataError, DataReport, EncodedFrames, Episode, camera_roles

NODE_STOP_WORDS: list[str] = list(SPECS["stop_words"].default)  # type: ignore[arg-type]
MAX_INSTRUCTION_CHARS = int(SPECS["max_instruction_chars"].default)  # type: ignore[arg-type]

EXAMPLE_CONFIG = """\
# Topics and message mapping for `lightvla train --data BAG_OR_FOLDER_OF_BAGS --data-config this.yaml`
# (`lightvla record BAG --data-config this.yaml` records these topics).
cameras: [camera/image_raw, wrist_camera/image_raw]  # sensor_msgs/Image or CompressedImage; third-person first
instruction: instruction      # std_msgs/String: new text starts an episode; "" or a stop word ends it (as in the node)
stop_words: [stop]            # instructions meaning "stop" (the node's stop_words parameter); never trained on
state:                        # sensor_msgs/JointState, std_msgs/Float32MultiArray or Float64MultiArray
  topic: state
  joint_names: []             # JointState: positions in this order (empty: message order)
  indices: []                 # arrays: elements in this order (empty: all)
actions:                      # concatenated in this order; the first topic's messages are the time steps
  - topic: action             # Float32/64MultiArray, Float32/64, Twist(Stamped) (linear xyz, angular xyz) or JointState
    indices: []
    scale: 1.0                # the recorded value is divided by this (a number or one per element)
gripper_dims: [-1]            # action dimensions left un-normalised (the gripper); [] normalises all
max_stamp_gap: 0.1            # s: frames and state paired with an action must be at most this old
episode_gap: 2.0              # s: a pause in the actions this long also ends an episode
stamps: receive               # receive (bag time) | header (message header stamps where present)
"""

ARRAY_TYPES = ("std_msgs/msg/Float32MultiArray", "std_msgs/msg/Float64MultiArray")
SCALAR_TYPES = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")
TWIST_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE = "sensor_msgs/msg/JointState"
MAX_DROPPED_FRACTION = 0.1


@dataclass
class VectorSource:
    """A topic whose messages become (part of) a vector."""

    topic: str
    indices: list[int] = field(default_factory=list)
    joint_names: list[str] = field(default_factory=list)
    scale: float | list[float] = 1.0

    def vector(self, msg: Any, msgtype: str) -> np.ndarray:
        if msgtype in ARRAY_TYPES:
            values = np.asarray(msg.data, dtype=np.float64).reshape(-1)
        elif msgtype in SCALAR_TYPES:
            values = np.array([float(msg.data)])
        elif msgtype in TWIST_TYPES:
            twist = msg.twist if msgtype.endswith("Stamped") else msg
            values = np.array([twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.x, twist.angular.y, twist.angular.z])
        elif msgtype == JOINT_STATE:
            positions = np.asarray(msg.position, dtype=np.float64)
            if self.joint_names:
                index = {name: i for i, name in enumerate(msg.name)}
                missing = [n for n in self.joint_names if n not in index]
                if missing:
                    raise ValueError(f"JointState lacks joint(s) {missing}")
                positions = positions[[index[n] for n in self.joint_names]]
            values = positions
        else:
            raise ValueError(f"unsupported message type {msgtype}")
        if self.indices:
            if max(self.indices) >= values.size:
                raise ValueError(f"indices {self.indices} out of range for {values.size} values")
            values = values[self.indices]
        return values / np.asarray(self.scale, dtype=np.float64)


@dataclass
class BagConfig:
    cameras: list[str]
    instruction: str
    state: VectorSource | None
    actions: list[VectorSource]
    gripper_dims: list[int]
    stop_words: list[str] = field(default_factory=lambda: list(NODE_STOP_WORDS))
    max_stamp_gap: float = 0.1
    episode_gap: float = 2.0
    stamps: str = "receive"

    @classmethod
    def load(cls, path: str | Path | None) -> "BagConfig":
        """The YAML file, or the node's default topics (see :data:`EXAMPLE_CONFIG`) without one."""
        text = EXAMPLE_CONFIG if path is None else Path(path).read_text()
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: invalid YAML ({exc})") from exc
        try:
            state = raw.get("state")
            config = cls(
                cameras=[str(t) for t in raw["cameras"]],
                instruction=str(raw["instruction"]),
                state=None if not state else VectorSource(**state),
                actions=[VectorSource(**a) for a in raw["actions"]],
                gripper_dims=[int(d) for d in raw.get("gripper_dims", [-1])],
                stop_words=[str(w) for w in raw.get("stop_words", NODE_STOP_WORDS)],
                max_stamp_gap=float(raw.get("max_stamp_gap", 0.1)),
                episode_gap=float(raw.get("episode_gap", 2.0)),
                stamps=str(raw.get("stamps", "receive")),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path or 'default rosbag config'}: missing or malformed entry ({exc}); expected:\n{EXAMPLE_CONFIG}") from exc
        if not config.cameras or not config.actions:
            raise DataError(f"{path}: at least one camera and one action topic are needed")
        if config.stamps not in ("receive", "header"):
            raise DataError(f"{path}: stamps must be 'receive' or 'header', got {config.stamps!r}")
        return config

    def topic_types(self) -> dict[str, tuple[str, ...]]:
        """Every topic to record (absolute names), with the message types the reader takes on it."""
        vectors = (*ARRAY_TYPES, *SCALAR_TYPES, *TWIST_TYPES, JOINT_STATE)
        topics = {_norm(t): IMAGE_TYPES for t in self.cameras}
        topics[_norm(self.instruction)] = ("std_msgs/msg/String",)
        if self.state is not None:
            topics[_norm(self.state.topic)] = vectors
        topics.update({_norm(a.topic): vectors for a in self.actions})
        return topics


def find_bags(root: Path) -> list[Path]:
    """``root`` itself when it is a bag folder, else every bag folder below it (sorted)."""
    if (root / "metadata.yaml").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("metadata.yaml"))


@dataclass
class _Open:
    """An episode being assembled."""

    instruction: str
    name: str
    images: list[list[bytes]]
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    last_action: float | None = None


def read_rosbags(bags: list[Path], config_path: str | Path | None, *, image_size: int | None, report: DataReport) -> list[Episode]:
    config = BagConfig.load(config_path)
    for role, topic in zip(camera_roles(len(config.cameras)), config.cameras):
        report.chose(f"{role}: {_norm(topic)}")
    report.chose(f"instruction: {_norm(config.instruction)} (episodes end at \"\" and stop words {config.stop_words})")
    report.chose(f"state: {_describe(config.state) if config.state else 'none'}")
    report.chose(f"action: {' + '.join(_describe(a) for a in config.actions)} (time steps: the first topic's messages)")
    episodes: list[Episode] = []
    for bag in bags:
        episodes += _read_bag(bag, config, image_size, report)
    return episodes


def _read_bag(bag: Path, config: BagConfig, image_size: int | None, report: DataReport) -> list[Episode]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.LATEST)
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:  # rosbags raises its own errors and OSErrors for unreadable bags
        raise DataError(f"cannot open rosbag2 {bag}: {exc}") from exc
    try:
        types = {c.topic: c.msgtype for c in reader.connections}
        wanted = {*config.cameras, config.instruction, *(a.topic for a in config.actions)}
        if config.state is not None:
            wanted.add(config.state.topic)
        missing = sorted(_norm(t) for t in wanted if _norm(t) not in {_norm(k) for k in types})
        if missing:
            raise DataError(f"{bag}: topic(s) {missing} not recorded; the bag has {sorted(types)}. "
                            "Record them, or name the right topics in --data-config.")
        types = {_norm(k): v for k, v in types.items()}
        for topic in config.cameras:
            if types[_norm(topic)] not in IMAGE_TYPES:
                raise DataError(f"{bag}: camera topic {topic} carries {types[_norm(topic)]}, not an image")
        if types[_norm(config.instruction)] != "std_msgs/msg/String":
            raise DataError(f"{bag}: instruction topic {config.instruction} carries {types[_norm(config.instruction)]}, not std_msgs/String")
        connections = [c for c in reader.connections if _norm(c.topic) in {_norm(t) for t in wanted}]
        return _assemble(bag, reader.messages(connections=connections), config, types, typestore, image_size, report)
    finally:
        reader.close()


def _describe(source: VectorSource) -> str:
    selected = f" joints {source.joint_names}" if source.joint_names else ""
    return _norm(source.topic) + selected + (f" elements {source.indices}" if source.indices else "")


def _norm(topic: str) -> str:
    return "/" + topic.strip("/")


def _assemble(bag, messages, config: BagConfig, types, typestore, image_size, report) -> list[Episode]:
    """One pass in recording order, pairing each primary action with the latest observations before it."""
    cameras = [_norm(t) for t in config.cameras]
    primary = _norm(config.actions[0].topic)
    secondary = {_norm(a.topic): a for a in config.actions[1:]}
    state_topic = _norm(config.state.topic) if config.state else None
    latest: dict[str, tuple[float, Any]] = {}
    gap = config.max_stamp_gap
    episodes: list[Episode] = []
    current: _Open | None = None
    tracker = InstructionTracker(MAX_INSTRUCTION_CHARS, tuple(config.stop_words))
    ignored = 0
    count = 0

    def close() -> None:
        nonlocal current
        if current is None:
            return
        episodes.append(_finish(current, report))
        current = None

    for connection, log_time, raw in messages:
        topic = _norm(connection.topic)
        msgtype = types[topic]
        msg = typestore.deserialize_cdr(raw, msgtype)
        stamp = _stamp(msg, log_time, config.stamps)
        if topic == _norm(config.instruction):
            event = tracker.update(str(msg.data), stamp)
            if event.kind == InstructionEventKind.REPEAT:
                continue
            close()
            if event.kind == InstructionEventKind.REJECTED:
                report.warn(str(bag), f"instruction at {stamp:.3f} s rejected as the node would ({event.reason}); episode ended")
            elif event.kind == InstructionEventKind.NEW:
                current = _Open(str(event.text), f"{bag.name}#{count}", [[] for _ in cameras])
                count += 1
            continue
        if topic != primary:
            latest[topic] = (stamp, msg)
            continue
        if current is None:
            ignored += 1
            continue
        if current.last_action is not None and stamp - current.last_action > config.episode_gap:
            instruction = current.instruction
            close()
            current = _Open(instruction, f"{bag.name}#{count}", [[] for _ in cameras])
            count += 1
        current.last_action = stamp
        current.steps += 1
        problem = _stale(latest, [*cameras, *([state_topic] if state_topic else []), *secondary], stamp, gap)
        if problem:
            current.dropped[problem] = current.dropped.get(problem, 0) + 1
            continue
        try:
            action = [config.actions[0].vector(msg, msgtype)]
            action += [source.vector(latest[t][1], types[t]) for t, source in secondary.items()]
            state = config.state.vector(latest[state_topic][1], types[state_topic]) if config.state else None
        except ValueError as exc:
            report.error(current.name, f"step {current.steps - 1}: {exc}")
            continue
        try:
            images = [_camera_frame(camera, latest[camera][1], types[camera]) for camera in cameras]
        except ImageDecodeError as exc:
            report.error(current.name, f"step {current.steps - 1}: {exc}")
            continue
        frames = []
        for image in images:
            if image_size is not None and image.shape[:2] != (image_size, image_size):
                image = np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC))
            frames.append(EncodedFrames.encode(np.ascontiguousarray(image)))
        for store, frame in zip(current.images, frames):
            store.append(frame)
        current.actions.append(np.concatenate(action))
        if state is not None:
            current.states.append(state)
    close()
    if ignored:
        report.warn(str(bag), f"{ignored} action message(s) outside an episode (before the first instruction or after a stop) "
                              "were ignored")
    return episodes


def _camera_frame(topic: str, msg: Any, msgtype: str) -> np.ndarray:
    """The RGB frame of a camera message, decoded as the node decodes it."""
    try:
        return decode_image(msg, compressed=msgtype == "sensor_msgs/msg/CompressedImage")
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"camera {topic}: {exc}") from exc


def _stale(latest: dict[str, tuple[float, Any]], topics: list[str], stamp: float, gap: float) -> str | None:
    """Why the observations for an action at ``stamp`` cannot be used (None when they can)."""
    for topic in topics:
        if topic not in latest:
            return f"no {topic} message yet"
        age = stamp - latest[topic][0]
        if age > gap:
            return f"{topic} older than max_stamp_gap {gap} s"
    return None


def _stamp(msg: Any, log_time: int, mode: str) -> float:
    header = getattr(msg, "header", None)
    if mode == "header" and header is not None and (header.stamp.sec or header.stamp.nanosec):
        return header.stamp.sec + header.stamp.nanosec * 1e-9
    return log_time * 1e-9


def _finish(current: _Open, report: DataReport) -> Episode:
    kept = len(current.actions)
    dropped = sum(current.dropped.values())
    if dropped:
        reasons = "; ".join(f"{n} x {why}" for why, n in current.dropped.items())
        message = f"{dropped} of {current.steps} step(s) dropped ({reasons})"
        if dropped > MAX_DROPPED_FRACTION * current.steps:
            report.error(current.name, message + " - misaligned or missing stamps")
        else:
            report.warn(current.name, message)
    dims = {a.shape for a in current.actions}
    if len(dims) > 1:
        report.error(current.name, f"action vectors change size within the episode: {sorted(dims)}")
    states = np.asarray(current.states, np.float32) if current.states and len({s.shape for s in current.states}) == 1 else None
    if current.states and states is None:
        report.error(current.name, "state vectors change size within the episode")
    actions = np.asarray(current.actions, np.float32) if kept and len(dims) == 1 else np.zeros((kept, 0), np.float32)
    return Episode(current.instruction, [EncodedFrames(f) for f in current.images], states, actions, current.name)


def write_episodes_bag(path: str | Path, episodes: list[Episode], *, storage: str = "mcap", period: float = 0.05,
                       config: BagConfig | None = None) -> Path:
    """Record episodes as a rosbag2 with the node's topics (what ``ros2 bag record`` of a demonstration gives).

    Per step, the camera images (sensor_msgs/Image rgb8) and the state (Float32MultiArray) come 1 ms after the
    step starts and the commanded action (Float32MultiArray) 5 ms later; each episode opens with its instruction
    and closes with an empty one. Used by the tests and to turn simulated demonstrations into training bags.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    config = config or BagConfig.load(None)
    if config.state is None or len(config.actions) != 1:
        raise ValueError("writing needs a config with a state topic and a single action topic")
    typestore = get_typestore(Stores.LATEST)
    types = typestore.types
    image_t, string_t, array_t = types["sensor_msgs/msg/Image"], types["std_msgs/msg/String"], types["std_msgs/msg/Float32MultiArray"]
    header_t, time_t, layout_t = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"], types["std_msgs/msg/MultiArrayLayout"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    out = Path(path)
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        cameras = [writer.add_connection(_norm(t), image_t.__msgtype__, typestore=typestore) for t in config.cameras]
        instruction = writer.add_connection(_norm(config.instruction), string_t.__msgtype__, typestore=typestore)
        state = writer.add_connection(_norm(config.state.topic), array_t.__msgtype__, typestore=typestore)
        action = writer.add_connection(_norm(config.actions[0].topic), array_t.__msgtype__, typestore=typestore)

        def write(connection, seconds: float, msg) -> None:
            writer.write(connection, int(round(seconds * 1e9)), typestore.serialize_cdr(msg, msg.__msgtype__))

        def array(values: np.ndarray):
            return array_t(layout=layout_t(dim=[], data_offset=0), data=np.asarray(values, np.float32))

        now = 1.0
        for episode in episodes:
            write(instruction, now, string_t(data=episode.instruction))
            for t in range(len(episode)):
                step = now + 0.01 + t * period
                stamp = time_t(sec=int(step + 0.001), nanosec=int(round((step + 0.001) % 1 * 1e9)))
                for connection, frames in zip(cameras, episode.images):
                    rgb = np.ascontiguousarray(frames[t])
                    header = header_t(stamp=stamp, frame_id="camera")
                    write(connection, step + 0.001, image_t(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                                            is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1)))
                if episode.states is not None:
                    write(state, step + 0.001, array(episode.states[t]))
                write(action, step + 0.005, array(episode.actions[t]))
            now += 0.01 + len(episode) * period
            write(instruction, now, string_t(data=""))
            now += 1.0
    return out
