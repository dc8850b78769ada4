"""The node's diagnostics: what it reports (the task adapters) and how it is published on /diagnostics.

Uses ``diagnostic_updater`` when the ROS install provides it; otherwise (PyPI wheels) publishes a
``DiagnosticArray`` with the same conventions: status names ``"<node>: <task>"``, hardware id set to the compute
device, one array per period. Either way the level is the one-byte value ``diagnostic_msgs`` defines.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from lightvla_ros.contract import PolicyOutput
from lightvla_ros.ros.actuation import Actuator
from lightvla_ros.ros.core.frames import FrameStore
from lightvla_ros.ros.core.instructions import InstructionTracker
from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.core.state import StateStore
from lightvla_ros.ros.core.stats import ActionCounters, PruningStats, RollingWindow
from lightvla_ros.ros.core.status import (
    ERROR,
    OK,
    CameraReport,
    InputLimits,
    InstructionReport,
    ModelInfo,
    OutputReport,
    StateReport,
    StatusReport,
    SyncReport,
    actions_status,
    execution_values,
    inference_status,
    inputs_status,
    instruction_status,
    model_status,
    outputs_status,
    pruning_status,
)
from lightvla_ros.ros.endpoints import Endpoints, qos_text

TaskFn = Callable[[], StatusReport]


def level_byte(level: int) -> bytes:
    """The ``DiagnosticStatus.level`` value of a numeric level (the field is a byte, never an int)."""
    return bytes([level])


def fill_status(stat: DiagnosticStatus, report: StatusReport) -> DiagnosticStatus:
    """Write a report into a status the way diagnostic_updater's wrapper expects (summary(level, message), add)."""
    stat.summary(level_byte(report.level), report.message)
    for key, value in report.values:
        stat.add(key, value)
    return stat


def to_status_msg(name: str, hardware_id: str, report: StatusReport) -> DiagnosticStatus:
    """A ``DiagnosticStatus`` message from a pure status report."""
    return DiagnosticStatus(level=level_byte(report.level), name=name, message=report.message,
                            hardware_id=hardware_id, values=[KeyValue(key=k, value=v) for k, v in report.values])


class Diagnostics:
    """Periodic diagnostics for one node, backed by diagnostic_updater when available."""

    def __init__(self, node: Node, hardware_id: str, period: float = 1.0) -> None:
        self._node = node
        self._hardware_id = hardware_id
        self._period = period
        self._tasks: list[tuple[str, TaskFn]] = []
        self._updater = None
        try:
            import diagnostic_updater
        except ImportError:
            self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._timer = node.create_timer(period, self.publish_now)
        else:
            self._updater = diagnostic_updater.Updater(node, period=period)
            self._updater.setHardwareID(hardware_id)

    @property
    def uses_diagnostic_updater(self) -> bool:
        """True when the standard diagnostic_updater library does the publishing."""
        return self._updater is not None

    def add(self, task: str, fn: TaskFn) -> None:
        """Register a task; it is evaluated once per period."""
        if self._updater is None:
            self._tasks.append((task, fn))
        else:
            self._updater.add(task, lambda stat: fill_status(stat, fn()))

    def set_hardware_id(self, hardware_id: str) -> None:
        """Change the hardware id, e.g. to the GPU name once the model is on it."""
        self._hardware_id = hardware_id
        if self._updater is not None:
            self._updater.setHardwareID(hardware_id)

    def publish_now(self) -> None:
        """Evaluate every task and publish one DiagnosticArray."""
        if self._updater is not None:
            self._updater.force_update()
            return
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        prefix = self._node.get_name()
        for task, fn in self._tasks:
            try:
                report = fn()
            except Exception as exc:  # a broken task must not stop the others from reporting
                report = StatusReport(ERROR, f'diagnostic task failed: {exc!r}', [])
            msg.status.append(to_status_msg(f'{prefix}: {task}', self._hardware_id, report))
        self._publisher.publish(msg)

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Keep publishing from a thread while the executor is blocked (loading a model inside a lifecycle
        transition), so monitors see the progress instead of a stale node."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self._period):
                self.publish_now()

        thread = threading.Thread(target=beat, name='lightvla-diagnostics', daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


@dataclass
class NodeHealth:
    """The node's live state as diagnostics report it; written by callbacks and the worker, read at 1 Hz."""

    model: ModelInfo
    frames: FrameStore
    tracker: InstructionTracker
    state: StateStore = field(default_factory=StateStore)
    latency: RollingWindow = field(default_factory=lambda: RollingWindow(100))
    pruning: PruningStats = field(default_factory=PruningStats)
    actions: ActionCounters = field(default_factory=ActionCounters)
    waiting: str = 'configure'
    input_error: str = ''
    input_error_at: float | None = None

    @classmethod
    def fresh(cls, config: NodeConfig, model: ModelInfo) -> 'NodeHealth':
        """Counters for one configuration of the node."""
        return cls(model=model, frames=FrameStore(config.num_cameras),
                   tracker=InstructionTracker(config.max_instruction_chars, tuple(config.stop_words)),
                   pruning=PruningStats(method=config.pruning, max_kept_tokens=config.max_kept_tokens))


    def record_inference(self, output: PolicyOutput, latency_s: float, now: float) -> None:
        """Latency and pruning numbers of one prediction."""
        self.latency.add(latency_s * 1000.0, now)
        stats = self.pruning
        stats.kept.add(output.num_kept, now)
        stats.keep_ratio.add(output.keep_ratio, now)
        stats.num_patches = int(output.num_patches)
        if 'saved_fraction' in output.flops:
            stats.flops_saved.add(output.flops['saved_fraction'], now)
        if 'total' in output.flops:
            stats.gflops.add(output.flops['total'] / 1e9, now)


# How long an input the model refused keeps the inputs task at WARN.
INPUT_ERROR_S = 10.0


class NodeReports:
    """Adapters from the node's live state to the pure status builders of :mod:`.core.status`, one per task."""

    TASKS = ('model', 'inputs', 'instruction', 'inference', 'pruning', 'actions', 'outputs')

    def __init__(self, health: Callable[[], NodeHealth], config: Callable[[], NodeConfig],
                 endpoints: Callable[[], Endpoints | None], actuator: Callable[[], Actuator | None],
                 now: Callable[[], float], device_name: Callable[[], str]) -> None:
        self._health = health
        self._config = config
        self._endpoints = endpoints
        self._actuator = actuator
        self._now = now
        self._device_name = device_name

    def register(self, diagnostics: Diagnostics) -> None:
        for task in self.TASKS:
            diagnostics.add(task, getattr(self, task))

    def model(self) -> StatusReport:
        return model_status(self._health().model)

    def inputs(self) -> StatusReport:
        health, cfg, endpoints, now = self._health(), self._config(), self._endpoints(), self._now()
        if endpoints is None:
            return StatusReport(OK, 'not configured: no subscriptions', [])
        cameras = [CameraReport(sub.topic_name, cfg.camera_kinds[i], qos_text(sub.qos_profile),
                                sub.get_publisher_count(), health.frames.counters[i], endpoints.camera_events[i])
                   for i, sub in enumerate(endpoints.cameras)]
        state = None
        if health.model.use_proprio is not False:
            sample = health.state.fresh(now, cfg.max_state_age)
            sub = endpoints.state
            state = StateReport(
                source=cfg.state_source, topic=sub.topic_name if sub else '', required=bool(health.model.use_proprio),
                fallback=cfg.missing_state, publishers=sub.get_publisher_count() if sub else 0,
                received=health.state.received, rejected=health.state.rejected, last_error=health.state.last_error,
                last_error_at=health.state.last_error_at,
                age=None if sample is None else now - sample.stamp)
        frames = health.frames
        report = inputs_status(cameras, state, now,
                               InputLimits(cfg.camera_timeout, cfg.max_image_age, cfg.sync_tolerance),
                               SyncReport(frames.sync_problem, frames.sync_problem_at, frames.sync_failures))
        if health.input_error_at is not None and now - health.input_error_at <= INPUT_ERROR_S:
            message = f'input rejected by the model: {health.input_error}'
            if report.level:
                message = report.message + '; ' + message
            return StatusReport(max(report.level, 1), message,
                                report.values + [('last model input error', health.input_error)])
        return report

    def instruction(self) -> StatusReport:
        health, endpoints = self._health(), self._endpoints()
        if endpoints is None:
            return StatusReport(OK, 'not configured: no instruction subscription', [])
        sub = endpoints.instruction
        task = health.tracker.snapshot()
        now = self._now()
        return instruction_status(InstructionReport(
            topic=sub.topic_name, text=task.text, epoch=task.epoch,
            age=None if task.received_at is None else now - task.received_at, repeats=health.tracker.repeats,
            rejected=health.tracker.rejected, last_rejection=health.tracker.last_rejection,
            publishers=sub.get_publisher_count(), events=endpoints.instruction_events, qos=qos_text(sub.qos_profile)),
            now)

    def inference(self) -> StatusReport:
        health, cfg = self._health(), self._config()
        budget = cfg.latency_budget or (health.model.chunk_len or 0) * cfg.dt
        return inference_status(health.latency, budget * 1000.0, self._now(), self._device_name(), health.model.dtype,
                                health.waiting)

    def pruning(self) -> StatusReport:
        return pruning_status(self._health().pruning)

    def actions(self) -> StatusReport:
        cfg, actuator = self._config(), self._actuator()
        report = actions_status(self._health().actions, self._now(), cfg.publish_actions, cfg.action_space)
        if actuator is None:
            return report
        scheduler = actuator.scheduler
        return StatusReport(report.level, report.message,
                            report.values + execution_values(cfg.execution_mode, len(scheduler), scheduler.stats))

    def outputs(self) -> StatusReport:
        endpoints = self._endpoints()
        if endpoints is None:
            return StatusReport(OK, 'not configured: no publishers', [])
        outputs = [OutputReport(pub.topic_name, qos_text(pub.qos_profile), pub.get_subscription_count(),
                                endpoints.output_events[pub.topic_name]) for pub in endpoints.publishers]
        return outputs_status(outputs, self._now())

