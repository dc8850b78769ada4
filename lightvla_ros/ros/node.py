"""``lightvla_node``: cameras and an instruction in, action chunks and pruning diagnostics out.

Interface (relative names resolve in the node's namespace; defaults from config/lightvla.yaml):

* Inputs: ``camera/image_raw`` and ``wrist_camera/image_raw`` (parameter ``camera_topics``; Image
  or CompressedImage per ``camera_types``; sensor-data QoS, overridable), ``instruction``
  (std_msgs/String, reliable + volatile, depth 10; "" or "stop" stops), ``state``
  (std_msgs/Float32MultiArray, or sensor_msgs/JointState with ``state_source: joint_states``).
* Always published: ``action_chunk`` (std_msgs/Float32MultiArray, layout steps x dims, the whole
  clipped chunk anchored at the observation), ``chunk_info`` (diagnostic_msgs/DiagnosticStatus:
  obs_stamp, publish_stamp, latency, trimmed_steps, epoch, kept tokens, ...), ``ee_path``
  (nav_msgs/Path, EEF mode), ``active_instruction`` (latched String), ``~/keep_ratio``
  (std_msgs/Float32), ``~/debug_image`` (sensor_msgs/Image, only while subscribed) and
  ``/diagnostics``.
* Actuation, only while ``publish_actions`` is true (default false; ``~/enable`` std_srvs/SetBool
  sets it): ``ee_twist`` (geometry_msgs/TwistStamped, one chunk step per ``dt``) or
  ``joint_trajectory`` (trajectory_msgs/JointTrajectory), and ``gripper`` (std_msgs/Float64).

Threading: subscription callbacks only store the newest message (see :mod:`.core.frames`); one
worker thread decodes a matched frame set, runs the policy and publishes; the executor thread runs
callbacks, the EEF streaming timer and diagnostics. The model loads on its own thread at start so
diagnostics report progress (and any failure) while it loads.

Run with ``ros2 run lightvla_ros lightvla_node`` or ``python -m lightvla_ros.ros.node``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, Float64, MultiArrayDimension, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lightvla_ros.ros.core import chunks as chunk_math
from lightvla_ros.ros.core.frames import FrameSet, FrameStore
from lightvla_ros.ros.core.images import ImageDecodeError, decode_image, encode_rgb_fields
from lightvla_ros.ros.core.instructions import InstructionEventKind, InstructionTracker
from lightvla_ros.ros.core.overlay import render_token_overlay
from lightvla_ros.ros.core.params import PARAMS, SPECS, ParamSpec, validate_value
from lightvla_ros.ros.core.state import (StateError, StateStore, state_from_array,
                                         state_from_joint_state)
from lightvla_ros.ros.core.stats import ActionCounters, PruningStats, RollingWindow
from lightvla_ros.ros.core.status import (CameraReport, InstructionReport, ModelInfo, QosEvents,
                                          StateReport, StatusReport, actions_status,
                                          inference_status, inputs_status, instruction_status,
                                          model_status, pruning_status)
from lightvla_ros.ros.diagnostics import Diagnostics
from lightvla_ros.ros.entry import spin_node

NODE_NAME = 'lightvla_node'

_ARRAY_TYPES = {'string': Parameter.Type.STRING_ARRAY, 'double': Parameter.Type.DOUBLE_ARRAY,
                'integer': Parameter.Type.INTEGER_ARRAY}

PolicyFactory = Callable[[dict[str, Any]], Any]


def load_policy(settings: dict[str, Any]) -> Any:
    """Build the real LightVLA policy (imports torch lazily, so the node imports without it)."""
    if settings['cpu_threads'] > 0:
        import torch

        torch.set_num_threads(int(settings['cpu_threads']))
    from lightvla_ros.policy import LightVLAPolicy

    return LightVLAPolicy.from_checkpoint(
        settings['checkpoint'], device=settings['device'], dtype=settings['dtype'],
        pruning=settings['pruning'], max_kept_tokens=settings['max_kept_tokens'] or None,
        unnorm_key=settings['unnorm_key'] or None, center_crop=settings['center_crop'],
        readout=settings['readout'], num_images=len(settings['camera_topics']))


def _qos_text(qos: QoSProfile) -> str:
    return (f'{qos.reliability.name}, {qos.durability.name}, '
            f'{qos.history.name} depth {qos.depth}')


def _stamp_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _stamp_text(stamp: Any) -> str:
    return f'{int(stamp.sec)}.{int(stamp.nanosec):09d}'


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + '...'


@dataclass
class _Stream:
    """Remaining steps of the current chunk, streamed one per ``dt`` (EEF twists, gripper)."""

    rows: deque
    needs_stop: bool = False


class LightVLANode(Node):
    """The LightVLA inference node (see the module docstring and the README's ROS section)."""

    def __init__(self, *, context: Any = None, policy_factory: PolicyFactory = load_policy,
                 node_name: str = NODE_NAME, namespace: str | None = None,
                 parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(node_name, context=context, namespace=namespace,
                         parameter_overrides=parameter_overrides)
        self._param_errors: list[str] = []
        self._declare_parameters()
        self._cfg: dict[str, Any] = {spec.name: self._read_param(spec) for spec in PARAMS}
        self._policy_factory = policy_factory
        self._policy: Any = None
        self._policy_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._stream_lock = threading.Lock()
        self._stream = _Stream(deque())
        self._waiting = 'the model to load'
        self._last_start = 0.0
        self._chunk_id = 0
        self._input_error = ''
        self._input_error_at: float | None = None
        self._num_topics = len(self._cfg['camera_topics'])
        self._frames = FrameStore(self._num_topics)
        self._tracker = InstructionTracker(self._cfg['max_instruction_chars'],
                                           tuple(self._cfg['stop_words']))
        self._state = StateStore()
        self._latency = RollingWindow(100)
        self._pruning = PruningStats(method=self._cfg['pruning'],
                                     max_kept_tokens=self._cfg['max_kept_tokens'])
        self._actions = ActionCounters()
        self._model = ModelInfo('loading', self._cfg['checkpoint'], self._cfg['device'],
                                self._cfg['dtype'], stage='starting')
        self._camera_events = [QosEvents() for _ in range(self._num_topics)]
        self._instruction_events = QosEvents()

        config_error = self._config_error()
        self._create_outputs()
        self._create_inputs()
        self._diagnostics = Diagnostics(self, self._cfg['device'])
        for task, fn in (('model', self._model_report), ('inputs', self._inputs_report),
                         ('instruction', self._instruction_report),
                         ('inference', self._inference_report), ('pruning', self._pruning_report),
                         ('actions', self._actions_report)):
            self._diagnostics.add(task, fn)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._enable_srv = self.create_service(SetBool, '~/enable', self._on_enable)
        self._stream_timer = self.create_timer(self._cfg['dt'], self._on_stream_tick)

        self._worker = threading.Thread(target=self._run_worker, name='lightvla-inference',
                                        daemon=True)
        self._loader: threading.Thread | None = None
        if config_error:
            self._fail_model('unconfigured' if not self._cfg['checkpoint'] else 'failed',
                             config_error)
        else:
            self._loader = threading.Thread(target=self._load_model, name='lightvla-loader',
                                            daemon=True)
            self._loader.start()
        self._worker.start()

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> None:
        for spec in PARAMS:
            descriptor = ParameterDescriptor(description=spec.description,
                                             read_only=spec.read_only)
            if spec.choices:
                descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
            if spec.min_value is not None:
                if isinstance(spec.default, float):
                    descriptor.floating_point_range = [FloatingPointRange(
                        from_value=float(spec.min_value), to_value=float(spec.max_value))]
                else:
                    descriptor.integer_range = [IntegerRange(
                        from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
            default = (_ARRAY_TYPES[spec.element]
                       if isinstance(spec.default, list) and not spec.default else spec.default)
            try:
                self.declare_parameter(spec.name, default, descriptor)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # A mistyped or out-of-range value in the parameter file must not kill the node:
                # keep the default and report the problem as a configuration error.
                self.declare_parameter(spec.name, default, descriptor, ignore_override=True)
                self._param_errors.append(f'parameter {spec.name}: {_error_text(exc)}')

    def _read_param(self, spec: ParamSpec) -> Any:
        try:
            value = self.get_parameter(spec.name).value
        except ParameterUninitializedException:
            return list(spec.default) if isinstance(spec.default, list) else spec.default
        return list(value) if isinstance(spec.default, list) else value

    def _config_error(self) -> str:
        """Why the read-only configuration cannot work, or '' (checked before loading)."""
        cfg = self._cfg
        if self._param_errors:
            return '; '.join(self._param_errors)
        for spec in PARAMS:
            reason = validate_value(spec, cfg[spec.name])
            if reason:
                return 'invalid parameter ' + reason
        if not cfg['checkpoint']:
            return ('no checkpoint configured: set the checkpoint parameter '
                    '(launch argument checkpoint:=/path/to/folder)')
        if not cfg['camera_topics']:
            return 'camera_topics is empty'
        if cfg['camera_types'] and len(cfg['camera_types']) != len(cfg['camera_topics']):
            return (f"camera_types has {len(cfg['camera_types'])} entries but camera_topics has "
                    f"{len(cfg['camera_topics'])}")
        if cfg['action_space'] == 'joint' and not cfg['joint_names']:
            return 'action_space joint needs joint_names'
        if len(cfg['action_lower']) != len(cfg['action_upper']):
            return 'action_lower and action_upper must have the same length'
        if not os.path.isdir(cfg['checkpoint']):
            return f"checkpoint folder '{cfg['checkpoint']}' does not exist"
        return ''

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate run-time changes (all of them before applying any) and apply them."""
        updates = {p.name: p.value for p in params if p.name in SPECS}
        for name, value in updates.items():
            reason = validate_value(SPECS[name], value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if 'pruning' in updates or 'max_kept_tokens' in updates:
            method = updates.get('pruning', self._cfg['pruning'])
            cap = updates.get('max_kept_tokens', self._cfg['max_kept_tokens'])
            with self._policy_lock:
                policy = self._policy
            if policy is not None:
                try:
                    policy.set_pruning(method, cap or None)
                except Exception as exc:  # the policy's own validation decides what is allowed
                    return SetParametersResult(successful=False, reason=_error_text(exc))
            self._pruning.method = method
            self._pruning.max_kept_tokens = cap
            self.get_logger().info(f'pruning set to {method} (max kept tokens: {cap or "no cap"})')
        for name, value in updates.items():
            self._cfg[name] = list(value) if isinstance(SPECS[name].default, list) else value
        if updates.get('publish_actions') is False:
            self._stop_motion()
        self._wake.set()
        return SetParametersResult(successful=True)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter('publish_actions', value=bool(request.data))])[0]
        response.success = result.successful
        response.message = (('actuation enabled' if request.data else 'actuation disabled')
                            if result.successful else result.reason)
        self.get_logger().info(f'~/enable: {response.message}')
        return response

    # ------------------------------------------------------------------ endpoints

    def _create_outputs(self) -> None:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE,
                              history=HistoryPolicy.KEEP_LAST)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        overrides = QoSOverridingOptions.with_default_policies()

        def pub(msg_type: Any, topic: str, qos: QoSProfile = reliable) -> Any:
            return self.create_publisher(msg_type, topic, qos, qos_overriding_options=overrides)

        self._pub_chunk = pub(Float32MultiArray, 'action_chunk')
        self._pub_info = pub(DiagnosticStatus, 'chunk_info')
        self._pub_keep = pub(Float32, '~/keep_ratio')
        self._pub_debug = pub(Image, '~/debug_image', QoSProfile(depth=2))
        self._pub_active = pub(String, 'active_instruction', latched)
        self._pub_gripper = pub(Float64, 'gripper')
        if self._cfg['action_space'] == 'joint':
            self._pub_traj = pub(JointTrajectory, 'joint_trajectory')
        else:
            self._pub_twist = pub(TwistStamped, 'ee_twist')
            self._pub_path = pub(Path, 'ee_path')
        self._pub_active.publish(String(data=''))

    def _create_inputs(self) -> None:
        overrides = QoSOverridingOptions.with_default_policies()
        self._camera_subs = []
        types = self._cfg['camera_types'] or ['raw'] * self._num_topics
        for i, (topic, kind) in enumerate(zip(self._cfg['camera_topics'], types)):
            events = self._camera_events[i]
            callbacks = SubscriptionEventCallbacks(
                incompatible_qos=lambda info, ev=events: self._on_incompatible(ev, info),
                message_lost=lambda info, ev=events: setattr(ev, 'lost', int(info.total_count)))
            msg_type = CompressedImage if kind == 'compressed' else Image
            self._camera_subs.append(self.create_subscription(
                msg_type, topic, lambda msg, index=i: self._on_image(index, msg),
                qos_profile_sensor_data, event_callbacks=callbacks,
                qos_overriding_options=overrides))
        instruction_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.VOLATILE)
        self._instruction_sub = self.create_subscription(
            String, self._cfg['instruction_topic'], self._on_instruction, instruction_qos,
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=lambda info: self._on_incompatible(self._instruction_events,
                                                                    info)),
            qos_overriding_options=overrides)
        self._state_sub = None
        source = self._cfg['state_source']
        if source != 'none':
            msg_type = JointState if source == 'joint_states' else Float32MultiArray
            self._state_sub = self.create_subscription(
                msg_type, self._cfg['state_topic'], self._on_state, qos_profile_sensor_data,
                qos_overriding_options=overrides)

    # ------------------------------------------------------------------ callbacks

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_incompatible(self, events: QosEvents, info: Any) -> None:
        events.incompatible = int(info.total_count)
        policy = getattr(info.last_policy_kind, 'name', str(info.last_policy_kind))
        events.last_policy = policy.removeprefix('RMW_QOS_POLICY_')
        events.last_incompatible_at = self._now()
        self.get_logger().warning(
            f'incompatible QoS publisher detected ({events.last_policy}); see /diagnostics')

    def _on_image(self, index: int, msg: Any) -> None:
        self._frames.put(index, msg, _stamp_seconds(msg.header.stamp), self._now())
        self._wake.set()

    def _on_instruction(self, msg: String) -> None:
        event = self._tracker.update(msg.data, self._now())
        log = self.get_logger()
        if event.kind is InstructionEventKind.NEW:
            # The running chunk keeps streaming until the first chunk of the new task replaces
            # it: flushing would leave the robot without commands for a whole inference.
            log.info(f'new instruction (epoch {event.epoch}): "{event.text}"')
            self._pub_active.publish(String(data=event.text or ''))
        elif event.kind is InstructionEventKind.STOP:
            log.info(f'instruction stop (epoch {event.epoch}): idle')
            self._stop_motion()
            self._pub_active.publish(String(data=''))
        elif event.kind is InstructionEventKind.REJECTED:
            log.warning(f'instruction rejected, going idle: {event.reason}')
            self._stop_motion()
            self._pub_active.publish(String(data=''))
        self._wake.set()

    def _on_state(self, msg: Any) -> None:
        now = self._now()
        expected = self._model.use_proprio and self._proprio_dim()
        try:
            if isinstance(msg, JointState):
                self._state.remember_joints(msg.name, msg.position)
                vector = state_from_joint_state(msg.name, msg.position,
                                                self._cfg['state_joint_names'])
                stamp = _stamp_seconds(msg.header.stamp) or now
            else:
                vector = state_from_array(msg.data, self._cfg['state_indices'])
                stamp = now
            self._state.put(vector, stamp, expected or None)
        except StateError as exc:
            self._state.record_error(str(exc), now)
            self.get_logger().warning(f'state rejected: {exc}', throttle_duration_sec=5.0)

    def _proprio_dim(self) -> int | None:
        with self._policy_lock:
            policy = self._policy
        return None if policy is None else getattr(policy, 'proprio_dim', None)

    # ------------------------------------------------------------------ model loading

    def _load_model(self) -> None:
        start = time.monotonic()
        settings = dict(self._cfg)
        log = self.get_logger()
        try:
            self._model.stage = f"loading checkpoint {settings['checkpoint']}"
            log.info(f"loading model from {settings['checkpoint']} on {settings['device']} ...")
            policy = self._policy_factory(settings)
            problem = self._model_mismatch(policy)
            if problem:
                self._fail_model('failed', problem)
                return
            self._model.device = str(policy.device)
            self._model.dtype = str(policy.dtype)
            self._diagnostics.set_hardware_id(str(getattr(policy, 'device_name', policy.device)))
            if settings['warmup']:
                self._model.stage = 'warming up'
                log.info('warming up ...')
                policy.warmup()
            wanted = (self._cfg['pruning'], self._cfg['max_kept_tokens'])
            if wanted != (settings['pruning'], settings['max_kept_tokens']):
                policy.set_pruning(wanted[0], wanted[1] or None)  # changed while loading
        except Exception as exc:  # any load failure is reported; the node keeps running
            self._fail_model('failed', _error_text(exc))
            return
        model = self._model
        model.num_images, model.chunk_len = policy.num_images, policy.chunk_len
        model.action_dim, model.use_proprio = policy.action_dim, bool(policy.use_proprio)
        model.load_seconds = time.monotonic() - start
        self._pruning.num_patches = policy.num_images * getattr(policy, 'patches_per_image', 256)
        with self._policy_lock:
            self._policy = policy
        model.stage, model.state = 'done', 'ready'
        self._waiting = 'an instruction'
        log.info(f'model ready in {model.load_seconds:.1f} s on {policy.device} '
                 f'({policy.dtype}); chunk {policy.chunk_len}x{policy.action_dim}, '
                 f'{policy.num_images} camera(s)')
        self._wake.set()

    def _model_mismatch(self, policy: Any) -> str:
        cfg = self._cfg
        if policy.num_images != self._num_topics:
            return (f'the checkpoint expects {policy.num_images} camera(s) but camera_topics '
                    f'lists {self._num_topics}')
        limits_error = chunk_math.validate_limits(cfg['action_lower'], cfg['action_upper'],
                                                  policy.action_dim)
        if limits_error:
            return limits_error
        if cfg['gripper_index'] >= policy.action_dim:
            return f"gripper_index {cfg['gripper_index']} >= action dims {policy.action_dim}"
        if cfg['action_space'] == 'joint' and len(cfg['joint_names']) > policy.action_dim:
            return (f"{len(cfg['joint_names'])} joint_names but only {policy.action_dim} "
                    'action dims')
        if cfg['action_space'] == 'eef_delta' and policy.action_dim < 6:
            return (f'action_space eef_delta needs >= 6 action dims, the model has '
                    f'{policy.action_dim}')
        return ''

    def _fail_model(self, state: str, error: str) -> None:
        self._model.state, self._model.error, self._model.stage = state, error, ''
        self._waiting = 'a working model'
        self.get_logger().error(f'model unavailable: {error}')

    # ------------------------------------------------------------------ inference worker

    def _run_worker(self) -> None:
        while not self._stop_event.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._step()
            except Exception as exc:  # keep the worker alive whatever one step does
                self.get_logger().error(f'inference step failed: {_error_text(exc)}',
                                        throttle_duration_sec=5.0)

    def _step(self) -> None:
        with self._policy_lock:
            policy = self._policy
        if policy is None:
            return
        now = self._now()
        task = self._tracker.snapshot()
        timeout = self._cfg['instruction_timeout']
        if task.text is not None and timeout > 0 and task.refreshed_at is not None \
                and now - task.refreshed_at > timeout:
            self._tracker.stop(f'instruction not refreshed for {timeout:.1f} s')
            self.get_logger().info(f'instruction not refreshed for {timeout:.1f} s; idle')
            self._stop_motion()
            self._pub_active.publish(String(data=''))
            return
        self._frames.active = task.text is not None
        if task.text is None:
            self._waiting = 'an instruction'
            return
        wait = self._cfg['inference_period'] - (time.monotonic() - self._last_start)
        if wait > 0:
            self._stop_event.wait(min(wait, 0.05))
            self._wake.set()
            return
        proprio = self._proprio(policy, now)
        if proprio is False:
            return
        taken = self._frames.take(now, self._cfg['sync_tolerance'], self._cfg['max_image_age'])
        if isinstance(taken, str):
            self._waiting = taken
            return
        images = self._decode(taken, now)
        if images is None:
            return
        self._waiting = ''
        self._last_start = time.monotonic()
        try:
            output = policy.predict(images, task.text, proprio)
        except Exception as exc:
            self._inference_failed(exc, now)
            return
        latency_s = time.monotonic() - self._last_start
        self._model.last_success_at = self._now()
        if self._tracker.epoch != task.epoch:
            self._actions.discarded_epoch += 1
            self.get_logger().info(f'discarded a result for the previous instruction '
                                   f'(epoch {task.epoch})')
            return
        self._publish_output(output, taken, task.text, task.epoch, latency_s, images)
        self._wake.set()

    def _decode(self, frameset: FrameSet, now: float) -> list[np.ndarray] | None:
        types = self._cfg['camera_types'] or ['raw'] * self._num_topics
        images = []
        for i, frame in enumerate(frameset.frames):
            try:
                images.append(decode_image(frame.msg, types[i] == 'compressed'))
            except ImageDecodeError as exc:
                topic = self._camera_subs[i].topic_name
                self._frames.record_error(i, str(exc), now)
                self.get_logger().warning(f'frame from {topic} rejected: {exc}',
                                          throttle_duration_sec=5.0)
                return None
        return images

    def _proprio(self, policy: Any, now: float) -> np.ndarray | None | bool:
        """The state vector, None when the model takes none, False when inference must wait."""
        if not policy.use_proprio:
            return None
        sample = self._state.latest()
        if sample is not None and now - sample.stamp <= self._cfg['max_state_age']:
            return sample.vector
        if self._cfg['missing_state'] == 'zeros':
            return np.zeros(int(policy.proprio_dim), dtype=np.float32)
        self._waiting = f"a valid state on {self._cfg['state_topic']}"
        return False

    def _inference_failed(self, exc: Exception, now: float) -> None:
        """Sort a failed prediction into bad input (WARN), non-finite output or a model fault."""
        try:
            from lightvla_ros.model.errors import InputError
        except ImportError:
            input_error = False
        else:
            input_error = isinstance(exc, InputError)
        text = _error_text(exc)
        if input_error:
            self._input_error, self._input_error_at = text, now
            self.get_logger().warning(f'input rejected by the model: {text}',
                                      throttle_duration_sec=5.0)
        elif isinstance(exc, FloatingPointError):
            self._reject_nonfinite(now)
        else:
            self._model.inference_errors += 1
            self._model.last_inference_error = text
            self._model.last_inference_error_at = self._now()
            self.get_logger().error(f'inference failed: {text}', throttle_duration_sec=5.0)

    def _reject_nonfinite(self, now: float) -> None:
        counters = self._actions
        counters.rejected_nonfinite += 1
        counters.nonfinite_since_last_good = True
        counters.last_nonfinite_at = now
        self.get_logger().error('model produced a non-finite action chunk; not published',
                                throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ publishing

    def _publish_output(self, output: Any, frameset: FrameSet, text: str, epoch: int,
                        latency_s: float, images: list[np.ndarray]) -> None:
        now = self._now()
        self._record_stats(output, latency_s, now)
        actions = np.asarray(output.actions, dtype=np.float32)
        counters = self._actions
        if actions.ndim != 2 or not chunk_math.all_finite(actions):
            self._reject_nonfinite(now)
            return
        clip = chunk_math.clip_actions(actions, self._cfg['action_lower'],
                                       self._cfg['action_upper'])
        dt = self._cfg['dt']
        trimmed = chunk_math.elapsed_steps(frameset.obs_stamp, now, dt)
        remaining = chunk_math.trim_chunk(clip.actions, trimmed)
        counters.trimmed_steps_last = min(trimmed, len(actions))
        counters.nonfinite_since_last_good = False
        if len(remaining) == 0:
            counters.stale += 1
            self.get_logger().warning(
                f'chunk stale on arrival: {now - frameset.obs_stamp:.3f} s after the observation '
                f'covers all {len(actions)} steps of {dt} s; not published',
                throttle_duration_sec=5.0)
            return
        if clip.clipped_elements:
            counters.clipped_chunks += 1
            counters.clipped_elements += clip.clipped_elements
        self._chunk_id += 1
        stamp_msg = self.get_clock().now().to_msg()
        self._pub_chunk.publish(self._chunk_msg(clip.actions))
        self._pub_info.publish(self._chunk_info(output, frameset, text, epoch, latency_s,
                                                trimmed, len(remaining), clip.clipped_elements,
                                                stamp_msg))
        self._pub_keep.publish(Float32(data=float(output.keep_ratio)))
        counters.published += 1
        counters.last_published_at = now
        if self._cfg['action_space'] == 'joint':
            self._publish_joint(remaining, stamp_msg)
        else:
            self._pub_path.publish(self._path_msg(remaining, stamp_msg))
        self._queue_stream(remaining)
        if self._cfg['debug_image'] and self._pub_debug.get_subscription_count() > 0:
            self._publish_debug(output, images, frameset)

    def _record_stats(self, output: Any, latency_s: float, now: float) -> None:
        self._latency.add(latency_s * 1000.0, now)
        stats = self._pruning
        stats.kept.add(output.num_kept, now)
        stats.keep_ratio.add(output.keep_ratio, now)
        stats.num_patches = int(output.num_patches)
        flops = getattr(output, 'flops', {}) or {}
        if 'saved_fraction' in flops:
            stats.flops_saved.add(flops['saved_fraction'], now)
        if 'total' in flops:
            stats.gflops.add(flops['total'] / 1e9, now)

    def _chunk_msg(self, actions: np.ndarray) -> Float32MultiArray:
        msg = Float32MultiArray()
        for label, size, stride in chunk_math.multiarray_layout(actions.shape, ('steps', 'dims')):
            msg.layout.dim.append(MultiArrayDimension(label=label, size=size, stride=stride))
        msg.layout.data_offset = 0
        msg.data = np.ascontiguousarray(actions, dtype=np.float32).reshape(-1)
        return msg

    def _chunk_info(self, output: Any, frameset: FrameSet, text: str, epoch: int,
                    latency_s: float, trimmed: int, remaining: int, clipped: int,
                    stamp_msg: Any) -> DiagnosticStatus:
        oldest = min(frameset.frames, key=lambda f: f.stamp)
        obs = (_stamp_text(oldest.msg.header.stamp) if oldest.stamped
               else f'{oldest.stamp:.9f}')
        flops = getattr(output, 'flops', {}) or {}
        values = {
            'chunk_id': str(self._chunk_id), 'instruction': text,
            'instruction_epoch': str(epoch), 'obs_stamp': obs,
            'camera_stamps': ' '.join(_stamp_text(f.msg.header.stamp) if f.stamped
                                      else f'{f.stamp:.9f}' for f in frameset.frames),
            'camera_spread_ms': f'{frameset.spread * 1000:.3f}',
            'publish_stamp': _stamp_text(stamp_msg), 'latency_ms': f'{latency_s * 1000:.3f}',
            'steps': str(int(output.actions.shape[0])), 'dims': str(int(output.actions.shape[1])),
            'dt': repr(self._cfg['dt']), 'trimmed_steps': str(trimmed),
            'remaining_steps': str(remaining), 'clipped_elements': str(clipped),
            'kept_tokens': str(int(output.num_kept)), 'total_tokens': str(int(output.num_patches)),
            'keep_ratio': f'{float(output.keep_ratio):.6f}',
            'flops_saved_fraction': f"{float(flops.get('saved_fraction', 0.0)):.6f}",
            'pruning': self._pruning.method,
            'actuation': str(bool(self._cfg['publish_actions'])),
        }
        return DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f'{self.get_name()}: chunk {self._chunk_id}',
            message=f'chunk {self._chunk_id} for "{text}"',
            hardware_id=str(self._model.device),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_joint(self, remaining: np.ndarray, stamp_msg: Any) -> None:
        if not self._cfg['publish_actions']:
            self._actions.gated += 1
            return
        names = list(self._cfg['joint_names'])
        positions = remaining[:, :len(names)].astype(np.float64)
        dt = self._cfg['dt']
        velocities = chunk_math.fill_velocities(positions, dt)
        msg = JointTrajectory(joint_names=names)
        msg.header.stamp = stamp_msg
        for j, (pos, vel) in enumerate(zip(positions, velocities)):
            msg.points.append(JointTrajectoryPoint(
                positions=pos.tolist(), velocities=vel.tolist(),
                time_from_start=Duration(seconds=(j + 1) * dt).to_msg()))
        self._pub_traj.publish(msg)

    def _path_msg(self, remaining: np.ndarray, stamp_msg: Any) -> Path:
        msg = Path()
        msg.header.stamp = stamp_msg
        msg.header.frame_id = self._cfg['frame_id']
        poses = chunk_math.integrate_eef_deltas(remaining[:, :6], self._cfg['linear_scale'],
                                                self._cfg['angular_scale'])
        for pos, quat in poses:
            pose = PoseStamped()
            pose.header = msg.header
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, pos)
            (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
             pose.pose.orientation.w) = quat
            msg.poses.append(pose)
        return msg

    def _publish_debug(self, output: Any, images: list[np.ndarray], frameset: FrameSet) -> None:
        grid = int(getattr(output, 'grid_size', 0)) or int(math.isqrt(output.patches_per_image))
        overlay = render_token_overlay(images, np.asarray(output.kept_patch_indices),
                                       int(output.patches_per_image), grid,
                                       center_crop=bool(self._cfg['center_crop']))
        msg = Image(**encode_rgb_fields(overlay))
        msg.header = frameset.frames[0].msg.header
        self._pub_debug.publish(msg)

    # ------------------------------------------------------------------ streaming and stopping

    def _queue_stream(self, remaining: np.ndarray) -> None:
        if not self._cfg['publish_actions']:
            self._actions.gated += 1
            return
        with self._stream_lock:
            self._stream.rows = deque(remaining.astype(np.float64))
            self._stream.needs_stop = True

    def _on_stream_tick(self) -> None:
        with self._stream_lock:
            row = self._stream.rows.popleft() if self._stream.rows else None
            stop = row is None and self._stream.needs_stop
            if stop:
                self._stream.needs_stop = False
        if row is None:
            if stop and self._cfg['action_space'] == 'eef_delta':
                self._publish_twist(np.zeros(6))
            return
        if not self._cfg['publish_actions']:
            return
        if self._cfg['action_space'] == 'eef_delta':
            self._publish_twist(row)
        gripper = self._cfg['gripper_index']
        if gripper >= 0:
            self._pub_gripper.publish(Float64(data=float(row[gripper])))
        self._actions.steps_streamed += 1

    def _publish_twist(self, row: np.ndarray) -> None:
        linear, angular = chunk_math.delta_to_twist(row, self._cfg['linear_scale'],
                                                    self._cfg['angular_scale'], self._cfg['dt'])
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._cfg['frame_id']
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = map(float, linear)
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = map(float, angular)
        self._pub_twist.publish(msg)

    def _stop_motion(self) -> None:
        """Drop queued steps and command a stop: a zero twist, or a hold at the measured joints."""
        with self._stream_lock:
            had_motion = bool(self._stream.rows) or self._stream.needs_stop
            self._stream.rows.clear()
            self._stream.needs_stop = False
        if not had_motion:
            return
        if self._cfg['action_space'] == 'eef_delta':
            self._publish_twist(np.zeros(6))
            return
        names = list(self._cfg['joint_names'])
        index = {name: i for i, name in enumerate(self._state.names)}
        if names and all(name in index for name in names):
            hold = JointTrajectory(joint_names=names)
            hold.header.stamp = self.get_clock().now().to_msg()
            hold.points.append(JointTrajectoryPoint(
                positions=[self._state.raw_positions[index[n]] for n in names],
                velocities=[0.0] * len(names),
                time_from_start=Duration(seconds=self._cfg['dt']).to_msg()))
            self._pub_traj.publish(hold)

    # ------------------------------------------------------------------ diagnostics tasks

    def _model_report(self) -> StatusReport:
        return model_status(self._model)

    def _inputs_report(self) -> StatusReport:
        now = self._now()
        types = self._cfg['camera_types'] or ['raw'] * self._num_topics
        cameras = [CameraReport(sub.topic_name, types[i], _qos_text(sub.qos_profile),
                                sub.get_publisher_count(), self._frames.counters[i],
                                self._camera_events[i])
                   for i, sub in enumerate(self._camera_subs)]
        state = None
        source = self._cfg['state_source']
        if self._model.use_proprio is not False:
            sample = self._state.latest()
            state = StateReport(
                source=source,
                topic=self._state_sub.topic_name if self._state_sub else '',
                required=bool(self._model.use_proprio), fallback=self._cfg['missing_state'],
                publishers=self._state_sub.get_publisher_count() if self._state_sub else 0,
                received=self._state.received, rejected=self._state.rejected,
                last_error=self._state.last_error, last_error_at=self._state.last_error_at,
                age=None if sample is None or now - sample.stamp > self._cfg['max_state_age']
                else now - sample.stamp)
        report = inputs_status(cameras, state, now, self._cfg['camera_timeout'],
                               self._frames.sync_problem, self._frames.sync_failures)
        if self._input_error_at is not None and now - self._input_error_at <= 10.0:
            message = f'input rejected by the model: {self._input_error}'
            if report.level:
                message = report.message + '; ' + message
            return StatusReport(max(report.level, 1), message,
                                report.values + [('last model input error', self._input_error)])
        return report

    def _instruction_report(self) -> StatusReport:
        now = self._now()
        task = self._tracker.snapshot()
        return instruction_status(InstructionReport(
            topic=self._instruction_sub.topic_name, text=task.text, epoch=task.epoch,
            age=None if task.received_at is None else now - task.received_at,
            repeats=self._tracker.repeats, rejected=self._tracker.rejected,
            last_rejection=self._tracker.last_rejection,
            publishers=self._instruction_sub.get_publisher_count(),
            events=self._instruction_events, qos=_qos_text(self._instruction_sub.qos_profile)),
            now)

    def _inference_report(self) -> StatusReport:
        budget = self._cfg['latency_budget'] or (self._model.chunk_len or 0) * self._cfg['dt']
        return inference_status(self._latency, budget * 1000.0, self._now(),
                                self._diagnostics_device(), self._model.dtype, self._waiting)

    def _diagnostics_device(self) -> str:
        with self._policy_lock:
            policy = self._policy
        if policy is None:
            return self._cfg['device']
        return str(getattr(policy, 'device_name', policy.device))

    def _pruning_report(self) -> StatusReport:
        return pruning_status(self._pruning)

    def _actions_report(self) -> StatusReport:
        return actions_status(self._actions, self._now(), bool(self._cfg['publish_actions']),
                              self._cfg['action_space'])

    # ------------------------------------------------------------------ lifecycle

    @property
    def model_state(self) -> str:
        """unconfigured, loading, ready or failed."""
        return self._model.state

    @property
    def model_error(self) -> str:
        """Why the model is unavailable ('' while loading or ready)."""
        return self._model.error

    def destroy_node(self) -> None:
        """Stop the worker before the node's endpoints go away."""
        self._stop_event.set()
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lightvla_node``."""
    spin_node(LightVLANode, args)


if __name__ == '__main__':
    main()
