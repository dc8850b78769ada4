"""``lightvla_node``: a managed (lifecycle) node; cameras and an instruction in, action chunks and diagnostics out.

Lifecycle (``ros2 lifecycle set /lightvla_node <transition>``; with ``autostart`` true, the default, the node walks
itself to active):

* configure: validate the parameters, create the topics, load and warm up the model (progress on /diagnostics);
  a failure is reported and the node stays unconfigured.
* activate: run inference and publish. deactivate: stop motion (zero twist or hold) and stop inferring; the
  instruction is kept, so activate resumes it. cleanup: release the model and its memory (the CUDA cache too)
  and remove the topics. shutdown: from any state.

Interface (relative names resolve in the node's namespace; defaults from config/lightvla.yaml):

* Inputs: ``camera/image_raw`` and ``wrist_camera/image_raw`` (``camera_topics``; Image or CompressedImage per
  ``camera_types``; sensor-data QoS, overridable), ``instruction`` (std_msgs/String; "" or a stop word stops),
  ``state`` (std_msgs/Float32MultiArray, or sensor_msgs/JointState with ``state_source: joint_states``).
* Published for every chunk the model computes: ``action_chunk`` (Float32MultiArray, steps x dims, the clipped
  chunk of the observation), ``chunk_info`` (DiagnosticStatus: obs_stamp, latency, trimmed and remaining steps,
  kept tokens, ...), ``~/keep_ratio``, ``~/debug_image`` (only while subscribed), ``ee_path`` (EEF mode), plus
  ``active_instruction`` (latched) and ``/diagnostics``.
* Actuation (see :mod:`.actuation`), only while ``publish_actions`` is true (``~/enable`` sets it) and only for
  chunks with steps left to execute: ``ee_twist`` or ``joint_trajectory``, and ``gripper``.

Threading: subscription callbacks only store the newest message; one worker thread decodes a matched frame set,
runs the policy and publishes; the executor runs callbacks, the control timer and diagnostics.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool

from lightvla_ros.contract import InputError, Policy, PolicySettings
from lightvla_ros.ros.actuation import Actuator, make_actuator
from lightvla_ros.ros.core import chunks as chunk_math
from lightvla_ros.ros.core.instructions import InstructionEventKind
from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.core.status import ModelInfo
from lightvla_ros.ros.diagnostics import Diagnostics, NodeHealth, NodeReports
from lightvla_ros.ros.endpoints import Endpoints
from lightvla_ros.ros.entry import spin_node, stop_requested
from lightvla_ros.ros.observations import ObservationInputs
from lightvla_ros.ros.parameters import NodeParameters, error_text
from lightvla_ros.ros.publishing import ChunkPublisher, Inference

NODE_NAME = 'lightvla_node'
PolicyFactory = Callable[[PolicySettings], Policy]
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
SCHEDULER_PARAMETERS = {'execution_mode', 'async_threshold', 'async_aggregation', 'ensemble_decay'}


def load_policy(settings: PolicySettings) -> Policy:
    """The real LightVLA policy (torch is imported here, so the node module imports without it)."""
    from lightvla_ros.policy import LightVLAPolicy

    return LightVLAPolicy.from_settings(settings)


class LightVLANode(LifecycleNode):
    """The LightVLA inference node (see the module docstring and the README's ROS section)."""

    def __init__(self, *, context: Any = None, policy_factory: PolicyFactory = load_policy,
                 node_name: str = NODE_NAME, namespace: str | None = None,
                 parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(node_name, context=context, namespace=namespace, parameter_overrides=parameter_overrides)
        self._policy_factory = policy_factory
        self._params = NodeParameters(self, self._check_change, self._on_change)
        cfg = self._params.config
        self._health = NodeHealth.fresh(cfg, ModelInfo('unconfigured', cfg.checkpoint, cfg.device, cfg.dtype))
        self._policy: Policy | None = None
        self._policy_lock = threading.Lock()  # guards self._policy
        self._inference_lock = threading.Lock()  # held while the worker uses the policy
        self._output_lock = threading.Lock()  # publishing a chunk vs. deactivating
        self._endpoints: Endpoints | None = None
        self._actuator: Actuator | None = None
        self._control_timer: Any = None
        self._active = threading.Event()
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._last_start = 0.0
        self._publisher: ChunkPublisher | None = None
        self._inputs = ObservationInputs(lambda: self._health, lambda: self._params.config, self._now,
                                         self._expected_state, self._wake.set, self.get_logger())
        self._diagnostics = Diagnostics(self, cfg.device)
        NodeReports(lambda: self._health, lambda: self._params.config, lambda: self._endpoints,
                    lambda: self._actuator, self._now, self._device_name).register(self._diagnostics)
        self._enable_srv = self.create_service(SetBool, '~/enable', self._on_enable)
        self._worker = threading.Thread(target=self._run_worker, name='lightvla-inference', daemon=True)
        self._worker.start()
        self._autostart_timer = self.create_timer(0.0, self._autostart) if cfg.autostart else None
        if not cfg.autostart:
            self._health.waiting = 'configure (autostart is false: use a lifecycle manager or ros2 lifecycle set)'

    # ------------------------------------------------------------------ state seen from outside

    @property
    def model_state(self) -> str:
        """unconfigured, loading, ready or failed."""
        return self._health.model.state

    @property
    def model_error(self) -> str:
        """Why the model is unavailable ('' while loading or ready)."""
        return self._health.model.error

    @property
    def health(self) -> NodeHealth:
        return self._health

    # ------------------------------------------------------------------ lifecycle transitions

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == SUCCESS and not stop_requested():  # Ctrl-C while loading: do not activate
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self._params.read()
        self._health = NodeHealth.fresh(cfg, ModelInfo('loading', cfg.checkpoint, cfg.device, cfg.dtype,
                                                       stage='validating parameters'))
        problem = self._params.problem()
        if problem:
            self._fail_model('unconfigured' if not cfg.checkpoint else 'failed', problem)
            return FAILURE
        self._endpoints = Endpoints(self, cfg, self._inputs.on_image, self._on_instruction, self._inputs.on_state)
        self._actuator = make_actuator(lambda: self._params.config, self._endpoints.publisher, self._now,
                                       self._stamp_now, self._health.state.measured_joints)
        self._publisher = ChunkPublisher(self.get_name(), self._endpoints, self._actuator, self._health,
                                         lambda: self._params.config, self._now, self._stamp_now, self.get_logger())
        self._endpoints.active_instruction.publish(String(data=''))
        with self._diagnostics.heartbeat():
            policy = self._load(cfg)
        if policy is None:
            self._release_endpoints()
            return FAILURE
        with self._policy_lock:
            self._policy = policy
        self._control_timer = self.create_timer(cfg.dt, self._on_control_tick)
        self._health.waiting = 'activation'
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._health.waiting = 'an instruction'
        self._active.set()
        self._wake.set()
        self.get_logger().info('active: inferring on each fresh set of frames while an instruction is set')
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._output_lock:
            self._active.clear()
            self._actuator.stop()
        self._health.waiting = 'activation'
        self.get_logger().info('inactive: motion stopped, no inference')
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self._release_endpoints()
        self._health.model.state, self._health.model.stage = 'unconfigured', ''
        self._health.waiting = 'configure'
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active.is_set():
            self.on_deactivate(state)
        return self.on_cleanup(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_shutdown(state)

    def destroy_node(self) -> None:
        """Stop the worker before the node's endpoints go away."""
        self._stop_event.set()
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()

    # ------------------------------------------------------------------ model loading and release

    def _load(self, cfg: NodeConfig) -> Policy | None:
        """Load and check the policy; None (reported) when it cannot be used."""
        model, log = self._health.model, self.get_logger()
        start = time.monotonic()
        policy: Policy | None = None
        try:
            model.stage = f'loading checkpoint {cfg.checkpoint}'
            log.info(f'loading model from {cfg.checkpoint} on {cfg.device} ...')
            policy = self._policy_factory(cfg.policy_settings())
            problem = self._model_mismatch(cfg, policy)
            if problem:
                raise ValueError(problem)
            model.device, model.dtype = str(policy.device), str(policy.dtype)
            self._diagnostics.set_hardware_id(policy.device_name)
            if cfg.warmup:
                model.stage = 'warming up'
                log.info('warming up ...')
                policy.warmup()
        except Exception as exc:  # any load failure is reported; the node keeps running
            if policy is not None:
                policy.release()  # a half-configured model must not keep its memory
            self._fail_model('failed', error_text(exc))
            return None
        model.num_images, model.chunk_len = policy.num_images, policy.chunk_len
        model.action_dim, model.use_proprio = policy.action_dim, bool(policy.use_proprio)
        model.load_seconds = time.monotonic() - start
        self._health.pruning.num_patches = policy.num_images * policy.patches_per_image
        model.stage, model.state, model.error = 'done', 'ready', ''
        log.info(f'model ready in {model.load_seconds:.1f} s on {policy.device} ({policy.dtype}); chunk '
                 f'{policy.chunk_len}x{policy.action_dim}, {policy.num_images} camera(s)')
        return policy

    def _model_mismatch(self, cfg: NodeConfig, policy: Policy) -> str:
        if policy.num_images != cfg.num_cameras:
            return f'the checkpoint expects {policy.num_images} camera(s) but camera_topics lists {cfg.num_cameras}'
        return (chunk_math.validate_limits(list(cfg.action_lower), list(cfg.action_upper), policy.action_dim)
                or self._actuator.check(policy.action_dim))

    def _fail_model(self, state: str, error: str) -> None:
        model = self._health.model
        model.state, model.error, model.stage = state, error, ''
        self._health.waiting = 'a working model'
        self.get_logger().error(f'model unavailable: {error}')

    def _release_model(self) -> None:
        """Drop the policy once no inference uses it, and give its memory back."""
        with self._inference_lock, self._policy_lock:
            policy, self._policy = self._policy, None
        if policy is not None:
            policy.release()
            self.get_logger().info('model released')

    def _release_endpoints(self) -> None:
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        if self._endpoints is not None:
            self._endpoints.destroy()
        self._endpoints, self._actuator, self._publisher = None, None, None

    # ------------------------------------------------------------------ parameters and services

    def _check_change(self, cfg: NodeConfig, updates: Mapping[str, Any]) -> str:
        """Run-time changes the table cannot judge: the pruning the loaded checkpoint supports."""
        if 'pruning' not in updates and 'max_kept_tokens' not in updates:
            return ''
        with self._policy_lock:
            policy = self._policy
        method = updates.get('pruning', cfg.pruning)
        cap = updates.get('max_kept_tokens', cfg.max_kept_tokens)
        return '' if policy is None else policy.check_pruning(method, cap or None)

    def _on_change(self, cfg: NodeConfig, changed: set[str]) -> None:
        if changed & {'pruning', 'max_kept_tokens'}:
            with self._policy_lock:
                if self._policy is not None:
                    self._policy.set_pruning(cfg.pruning, cfg.max_kept_tokens or None)
            self._health.pruning.method, self._health.pruning.max_kept_tokens = cfg.pruning, cfg.max_kept_tokens
            self.get_logger().info(f'pruning set to {cfg.pruning} (max kept tokens: {cfg.max_kept_tokens or "no cap"})')
        if 'publish_actions' in changed and not cfg.publish_actions:
            self._stop_motion()
        if self._actuator is not None and changed & SCHEDULER_PARAMETERS:
            self._actuator.configure(cfg)
            self.get_logger().info(f'chunk execution: {cfg.execution_mode}')
        self._wake.set()

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter('publish_actions', value=bool(request.data))])[0]
        response.success = result.successful
        response.message = (('actuation enabled' if request.data else 'actuation disabled')
                            if result.successful else result.reason)
        self.get_logger().info(f'~/enable: {response.message}')
        return response

    # ------------------------------------------------------------------ callbacks

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp_now(self) -> Any:
        return self.get_clock().now().to_msg()

    def _expected_state(self) -> int | None:
        with self._policy_lock:
            return self._policy.proprio_dim if self._policy is not None and self._policy.use_proprio else None

    def _device_name(self) -> str:
        with self._policy_lock:
            return self._params.config.device if self._policy is None else self._policy.device_name

    def _on_instruction(self, msg: String) -> None:
        event = self._health.tracker.update(msg.data, self._now())
        log = self.get_logger()
        if event.kind is InstructionEventKind.NEW:
            # The running chunk keeps streaming until the first chunk of the new task replaces
            # it: flushing would leave the robot without commands for a whole inference.
            log.info(f'new instruction (epoch {event.epoch}): "{event.text}"')
            self._endpoints.active_instruction.publish(String(data=event.text or ''))
        elif event.kind in (InstructionEventKind.STOP, InstructionEventKind.REJECTED):
            if event.kind is InstructionEventKind.STOP:
                log.info(f'instruction stop (epoch {event.epoch}): idle')
            else:
                log.warning(f'instruction rejected, going idle: {event.reason}')
            self._go_idle()
        self._wake.set()

    def _on_control_tick(self) -> None:
        self._actuator.tick()
        if self._actuator.wants_inference():
            self._wake.set()

    def _go_idle(self) -> None:
        self._stop_motion()
        if self._endpoints is not None:
            self._endpoints.active_instruction.publish(String(data=''))

    def _stop_motion(self) -> None:
        if self._actuator is not None:
            self._actuator.stop()

    # ------------------------------------------------------------------ inference worker

    def _run_worker(self) -> None:
        while not self._stop_event.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            if not self._active.is_set():
                continue
            try:
                with self._inference_lock:
                    self._step()
            except Exception as exc:  # keep the worker alive whatever one step does
                if self._stop_event.is_set() or not self.context.ok():
                    return  # shutting down: the context is gone, so there is nothing to publish or log to
                self.get_logger().error(f'inference step failed: {error_text(exc)}', throttle_duration_sec=5.0)

    def _step(self) -> None:
        with self._policy_lock:
            policy = self._policy
        if policy is None:
            return
        cfg, health, now = self._params.config, self._health, self._now()
        task = health.tracker.snapshot()
        if (task.text is not None and cfg.instruction_timeout > 0 and task.refreshed_at is not None
                and now - task.refreshed_at > cfg.instruction_timeout):
            health.tracker.stop(f'instruction not refreshed for {cfg.instruction_timeout:.1f} s')
            self.get_logger().info(f'instruction not refreshed for {cfg.instruction_timeout:.1f} s; idle')
            self._go_idle()
            return
        wanted = self._actuator.wants_inference()
        health.frames.active = task.text is not None and wanted
        if task.text is None:
            health.waiting = 'an instruction'
            return
        if not wanted:
            health.waiting = f'the queued steps to run down ({cfg.execution_mode})'
            return
        wait = cfg.inference_period - (time.monotonic() - self._last_start)
        if wait > 0:
            self._stop_event.wait(min(wait, 0.05))
            self._wake.set()
            return
        taken = health.frames.take(now, cfg.sync_tolerance, cfg.max_image_age)
        if isinstance(taken, str):
            health.waiting = taken
            return
        proprio = self._inputs.proprio(policy, taken, now)
        if proprio is False:
            return
        images = self._inputs.decode(taken, now)
        if images is None:
            return
        health.waiting = ''
        self._last_start = time.monotonic()
        try:
            output = policy.predict(images, task.text, proprio)
        except Exception as exc:
            self._inference_failed(exc, now)
            return
        latency_s = time.monotonic() - self._last_start
        health.model.last_success_at = self._now()
        if health.tracker.epoch != task.epoch:
            health.actions.discarded_epoch += 1
            # Nothing was computed from these frames for the new instruction: one that is still fresh is its first
            # observation (a lockstep simulator re-sends it, and a re-send is a duplicate).
            health.frames.restore(taken)
            self.get_logger().info(f'discarded a result for the previous instruction (epoch {task.epoch})')
            return
        with self._output_lock:
            if self._active.is_set():
                self._publisher.publish(Inference(output, taken, images, task.text, task.epoch, latency_s))
        self._wake.set()

    def _inference_failed(self, exc: Exception, now: float) -> None:
        """Sort a failed prediction into bad input (WARN), non-finite output or a model fault."""
        text, health = error_text(exc), self._health
        if isinstance(exc, InputError):
            health.input_error, health.input_error_at = text, now
            self.get_logger().warning(f'input rejected by the model: {text}', throttle_duration_sec=5.0)
        elif isinstance(exc, FloatingPointError):
            self._publisher.reject_nonfinite(now)
        else:
            health.model.inference_errors += 1
            health.model.last_inference_error, health.model.last_inference_error_at = text, self._now()
            self.get_logger().error(f'inference failed: {text}', throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lightvla_node``."""
    spin_node(LightVLANode, args)


if __name__ == '__main__':
    main()
