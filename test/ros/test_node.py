"""lightvla_node with real rclpy, in the test process, driven by a fake policy.

The fake policy makes timing-sensitive behaviour (discarding a result computed for an old
instruction, non-finite output, clipping) deterministic; tests against the real tiny checkpoint in
a separate process live in test_ros_node_process.py.
"""

from __future__ import annotations

import gc
import math
import os
import re
import threading
import weakref
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from ros_support import FakePolicy, image_msg, info_values, isolate_ros_environment, rgb_image, spin_until

isolate_ros_environment()

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float32, Float32MultiArray, Float64, Header, String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from lightvla_ros.ros.entry import lifecycle_state  # noqa: E402
from lightvla_ros.ros.node import LightVLANode  # noqa: E402

DT = 0.1
TOPICS = ('/camera/image_raw', '/wrist_camera/image_raw')


class Harness:
    """The node plus a tester node on one executor in a fresh context."""

    def __init__(self, factory: Any, overrides: dict[str, Any], checkpoint: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        params = {'checkpoint': checkpoint, 'dt': DT, **overrides}
        self.node = LightVLANode(context=self.context, policy_factory=factory,
                                 parameter_overrides=[Parameter(k, value=v)
                                                      for k, v in params.items()])
        self.tester = rclpy.create_node('tester', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.got: dict[str, list] = defaultdict(list)
        for msg_type, topic in ((DiagnosticStatus, 'chunk_info'),
                                (Float32MultiArray, 'action_chunk'),
                                (DiagnosticArray, '/diagnostics'), (TwistStamped, 'ee_twist'),
                                (Path, 'ee_path'), (Float64, 'gripper'),
                                (JointTrajectory, 'joint_trajectory'),
                                (Float32, '/lightvla_node/keep_ratio'),
                                (String, 'active_instruction')):
            self.tester.create_subscription(msg_type, topic, self.got[topic].append, 50)
        self.cameras = [self.tester.create_publisher(Image, t, 10) for t in TOPICS]
        self.instruction = self.tester.create_publisher(String, '/instruction', 10)
        self.state = self.tester.create_publisher(Float32MultiArray, '/state', 10)
        if overrides.get('autostart', True):
            self.wait_configured()

    def wait_configured(self) -> None:
        assert self.wait(lambda: self.node.model_state == 'ready'
                         and self.got['active_instruction']  # the latched '' of configure
                         and self.instruction.get_subscription_count() > 0
                         and all(c.get_subscription_count() for c in self.cameras), 10.0)

    def wait(self, predicate: Any, timeout: float = 5.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def now(self) -> Any:
        return self.tester.get_clock().now()

    def send_frames(self, age: float = 0.0, encodings: tuple[str, str] = ('rgb8', 'rgb8'),
                    msgs: list | None = None) -> Any:
        stamp = (self.now() - rclpy.duration.Duration(seconds=age)).to_msg()
        for i, pub in enumerate(self.cameras):
            pub.publish(msgs[i] if msgs else image_msg(rgb_image(seed=i), stamp, encodings[i]))
        return stamp

    def instruct(self, text: str) -> None:
        self.instruction.publish(String(data=text))

    def stream_until(self, predicate: Any, timeout: float = 5.0, **frame_args: Any) -> bool:
        """Publish frames at ~10 Hz while spinning, until the predicate holds."""
        deadline = self.now().nanoseconds * 1e-9 + timeout
        while self.now().nanoseconds * 1e-9 < deadline:
            self.send_frames(**frame_args)
            if self.wait(predicate, 0.1):
                return True
        return predicate()

    def active(self) -> str | None:
        """The last text received on active_instruction."""
        return self.got['active_instruction'][-1].data if self.got['active_instruction'] else None

    def status(self, task: str) -> DiagnosticStatus | None:
        for array in reversed(self.got['/diagnostics']):
            for status in array.status:
                if status.name == f'lightvla_node: {task}':
                    return status
        return None

    def wait_status(self, task: str, predicate: Any, timeout: float = 4.0) -> DiagnosticStatus:
        """Wait for a fresh diagnostics array whose ``task`` status satisfies the predicate."""
        def check() -> bool:
            status = self.status(task)
            return status is not None and predicate(status)
        self.got['/diagnostics'].clear()
        assert self.wait(check, timeout), self.status(task)
        return self.status(task)

    def close(self) -> None:
        self.node.destroy_node()
        self.tester.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def make_harness(tmp_path):
    harnesses = []

    def make(policy: Any = None, factory: Any = None, **overrides: Any) -> Harness:
        policy = policy or FakePolicy()
        harness = Harness(factory or (lambda settings: policy), overrides, str(tmp_path))
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()


def level(status: DiagnosticStatus) -> int:
    return status.level[0]


def test_chunk_layout_stamps_and_trimming(make_harness):
    h = make_harness()
    h.instruct('pick up the bowl')
    assert h.wait(lambda: h.active() == 'pick up the bowl')
    stamp = h.send_frames(age=0.25)
    assert h.wait(lambda: h.got['chunk_info'] and h.got['action_chunk'])
    chunk = h.got['action_chunk'][0]
    assert [(d.label, d.size, d.stride) for d in chunk.layout.dim] == [('steps', 8, 56),
                                                                       ('dims', 7, 7)]
    data = np.asarray(chunk.data).reshape(8, 7)
    np.testing.assert_allclose(data[:, 0], np.arange(8) * 0.1, rtol=1e-6)
    info = info_values(h.got['chunk_info'][0])
    assert info['obs_stamp'] == f'{stamp.sec}.{stamp.nanosec:09d}'
    assert info['instruction'] == 'pick up the bowl' and info['instruction_epoch'] == '1'
    publish = float(info['publish_stamp'])
    # the steps whose interval ended before the chunk was published are trimmed; the one in progress is kept
    expected_trim = math.floor((publish - float(info['obs_stamp'])) / DT + 1e-9)
    assert int(info['trimmed_steps']) == expected_trim >= 2
    assert int(info['remaining_steps']) == 8 - expected_trim
    assert info['kept_tokens'] == '128' and info['total_tokens'] == '512'
    assert h.wait(lambda: h.got['/lightvla_node/keep_ratio'])
    assert h.got['/lightvla_node/keep_ratio'][0].data == pytest.approx(0.25)
    # actuation is gated off by default: nothing streamed
    assert not h.got['ee_twist'] and not h.got['gripper']
    assert h.wait(lambda: h.got['ee_path'])
    assert len(h.got['ee_path'][0].poses) == 8 - expected_trim + 1


def test_a_chunk_too_late_to_execute_is_published_but_not_executed(make_harness):
    h = make_harness(max_image_age=5.0, publish_actions=True)
    h.instruct('go')
    h.send_frames(age=1.0)  # 1 s old with 8 x 0.1 s steps: every step already elapsed
    status = h.wait_status('actions', lambda s: info_values(s)[
        'chunks too late to execute (all steps elapsed)'] == '1')
    assert level(status) == 1 and 'not executed' in status.message
    assert len(h.got['action_chunk']) == 1 and len(h.got['chunk_info']) == 1
    info = info_values(h.got['chunk_info'][0])
    assert info['remaining_steps'] == '0' and info['executable'] == 'False'
    assert not h.got['ee_twist'] and not h.got['ee_path'] and not h.got['gripper']
    h.send_frames()  # a fresh chunk clears the warning
    h.wait_status('actions', lambda s: level(s) == 0)


def test_a_chunk_is_stale_only_once_its_last_step_has_passed(make_harness):
    h = make_harness(max_image_age=5.0)
    h.instruct('go')
    h.send_frames(age=7.3 * DT)  # the 8th step (7 dt .. 8 dt) is still running
    assert h.wait(lambda: h.got['chunk_info'])
    info = info_values(h.got['chunk_info'][0])
    assert info['trimmed_steps'] == '7' and info['remaining_steps'] == '1'
    assert h.node.health.actions.stale == 0


def test_eef_streaming_when_enabled(make_harness):
    h = make_harness()
    client = h.tester.create_client(SetBool, '/lightvla_node/enable')
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(SetBool.Request(data=True))
    assert h.wait(future.done) and future.result().success
    assert h.node.get_parameter('publish_actions').value is True
    h.instruct('go')
    assert h.stream_until(lambda: len(h.got['ee_twist']) >= 3 and h.got['gripper'])
    assert h.stream_until(lambda: any(t.twist.linear.x > 0 for t in h.got['ee_twist'])
                          and any(g.data > 0 for g in h.got['gripper']))
    twist = max(h.got['ee_twist'], key=lambda t: t.twist.linear.x)
    assert twist.header.frame_id == 'base_link'
    # every dimension of a fake step is equal: linear = a * 0.05 / dt, angular = a * 0.5 / dt
    assert twist.twist.linear.x == pytest.approx(twist.twist.angular.z / 10)
    assert 0.0 < max(g.data for g in h.got['gripper']) <= 0.7 + 1e-6
    future = client.call_async(SetBool.Request(data=False))
    assert h.wait(future.done) and future.result().success
    assert h.wait(lambda: h.got['ee_twist'][-1].twist.linear.x == 0.0)


def test_joint_trajectory(make_harness):
    names = [f'joint{i}' for i in range(6)]
    h = make_harness(action_space='joint', joint_names=names, publish_actions=True)
    h.instruct('go')
    assert h.stream_until(lambda: h.got['joint_trajectory'])
    traj = h.got['joint_trajectory'][0]
    info = info_values(h.got['chunk_info'][0])
    assert traj.joint_names == names
    assert len(traj.points) == int(info['remaining_steps'])
    first = int(info['trimmed_steps'])
    for j, point in enumerate(traj.points):
        assert point.positions[0] == pytest.approx(0.1 * (first + j), rel=1e-5)
        t = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        assert t == pytest.approx((j + 1) * DT)
    assert all(v == 0.0 for v in traj.points[-1].velocities)
    if len(traj.points) > 2:
        assert traj.points[1].velocities[0] == pytest.approx(1.0, rel=1e-5)  # 0.1 per 0.1 s


def test_instruction_change_discards_the_old_result(make_harness):
    policy = FakePolicy()
    policy.gate = threading.Event()
    h = make_harness(policy)
    h.instruct('task A')
    h.send_frames()
    assert h.wait(policy.entered.is_set)  # inference for A is now in flight
    h.instruct('task B')
    assert h.wait(lambda: h.active() == 'task B')
    policy.gate.set()
    assert h.stream_until(lambda: h.got['chunk_info'])
    texts = {info_values(s)['instruction'] for s in h.got['chunk_info']}
    assert texts == {'task B'}
    status = h.wait_status('actions', lambda s: True)
    assert info_values(status)['results discarded (instruction changed)'] == '1'
    # a repeat of B is not a new task
    h.instruct('  Task B. ')
    status = h.wait_status('instruction', lambda s: info_values(s)['repeats ignored'] == '1')
    assert info_values(status)['epoch'] == '2'


def test_the_observation_in_flight_when_the_instruction_changes_is_inferred_on_for_the_new_one(make_harness):
    """Nothing was computed from it for the new instruction, and a lockstep simulator waits for that very chunk."""
    policy = FakePolicy()
    policy.gate = threading.Event()
    h = make_harness(policy)
    h.instruct('task A')
    stamp = h.send_frames()
    assert h.wait(policy.entered.is_set)
    h.instruct('task B')
    assert h.wait(lambda: h.active() == 'task B')
    policy.gate.set()
    assert h.wait(lambda: h.got['chunk_info'])  # no new frames sent
    info = info_values(h.got['chunk_info'][0])
    assert info['instruction'] == 'task B' and info['obs_stamp'] == f'{stamp.sec}.{stamp.nanosec:09d}'
    assert [c.used for c in h.node.health.frames.counters] == [1, 1]


def test_a_resent_observation_is_inferred_on_once(make_harness):
    """A lockstep simulator re-sends its observation (same stamps) until the chunk for it arrives."""
    policy = FakePolicy()
    policy.gate = threading.Event()
    h = make_harness(policy)
    h.instruct('go')
    observation = [image_msg(rgb_image(seed=i), h.now().to_msg()) for i in range(2)]
    h.send_frames(msgs=observation)
    assert h.wait(policy.entered.is_set)
    h.send_frames(msgs=observation)
    duplicates = h.node.health.frames.counters
    assert h.wait(lambda: [c.duplicates for c in duplicates] == [1, 1])
    policy.gate.set()
    assert h.wait(lambda: h.got['chunk_info'])
    h.send_frames(msgs=observation)
    assert h.wait(lambda: [c.duplicates for c in duplicates] == [2, 2])
    assert not h.wait(lambda: len(policy.calls) > 1, 0.5)
    status = h.wait_status('inputs', lambda s: True)
    assert info_values(status)['camera 0 duplicate frames ignored'] == '2'


def test_non_finite_chunk_is_rejected(make_harness):
    policy = FakePolicy()
    policy.next_actions = np.full((8, 7), np.nan, np.float32)
    h = make_harness(policy)
    h.instruct('go')
    h.stream_until(lambda: h.node.health.actions.rejected_nonfinite > 0)
    status = h.wait_status('actions', lambda s: level(s) == 2)
    assert 'non-finite' in status.message and not h.got['chunk_info']
    policy.next_actions = None
    assert h.stream_until(lambda: h.got['chunk_info'])
    h.wait_status('actions', lambda s: level(s) == 0)


def test_actions_are_clipped(make_harness):
    policy = FakePolicy()
    policy.scale = 5.0
    h = make_harness(policy)
    h.instruct('go')
    assert h.stream_until(lambda: h.got['action_chunk'])
    data = np.asarray(h.got['action_chunk'][0].data)
    assert data.max() == pytest.approx(1.0) and data.min() >= -1.0
    assert int(info_values(h.got['chunk_info'][0])['clipped_elements']) > 0


@pytest.mark.parametrize('msgs,needle', [
    ('encoding', 'unsupported encoding'),
    ('zero', 'zero-size'),
    ('short', 'needs'),
])
def test_bad_frames_are_reported_and_skipped(make_harness, msgs, needle):
    h = make_harness()
    h.instruct('go')
    stamp = h.now().to_msg()
    good = image_msg(rgb_image(seed=1), stamp)
    bad = image_msg(rgb_image(seed=0), stamp)
    if msgs == 'encoding':
        bad.encoding = 'no_such_encoding'
    elif msgs == 'zero':
        bad.height, bad.width, bad.step, bad.data = 0, 0, 0, b''
    else:
        bad.data = bad.data[:100]
    h.send_frames(msgs=[bad, good])
    status = h.wait_status('inputs', lambda s: needle in s.message)
    assert level(status) == 1 and not h.got['chunk_info']
    assert h.stream_until(lambda: h.got['chunk_info'])  # still alive and working


def test_camera_stamp_mismatch_and_silence(make_harness):
    h = make_harness(camera_timeout=0.5)
    h.instruct('go')
    now = h.now()
    h.cameras[0].publish(image_msg(rgb_image(), now.to_msg()))
    h.cameras[1].publish(image_msg(rgb_image(), (now - rclpy.duration.Duration(
        seconds=0.5)).to_msg()))
    status = h.wait_status('inputs', lambda s: 'differ by 500 ms' in s.message)
    assert level(status) == 1 and not h.got['chunk_info']
    status = h.wait_status('inputs', lambda s: 'silent' in s.message)
    assert level(status) == 1


def test_state_is_used_and_nan_state_rejected(make_harness):
    policy = FakePolicy()
    h = make_harness(policy, missing_state='wait')
    h.instruct('go')
    assert h.wait(lambda: h.state.get_subscription_count() > 0)
    h.state.publish(Float32MultiArray(data=[float('nan')] * 8))
    status = h.wait_status('inputs', lambda s: 'NaN' in s.message)
    assert level(status) == 1
    h.send_frames()
    h.wait(lambda: False, 0.3)
    assert not policy.calls and not h.got['chunk_info']
    state = np.arange(8, dtype=np.float32)
    h.state.publish(Float32MultiArray(data=state))
    assert h.stream_until(lambda: h.got['chunk_info'])
    np.testing.assert_array_equal(policy.calls[-1][1], state)


def test_joint_state_source(make_harness):
    policy = FakePolicy()
    policy.proprio_dim = 2
    h = make_harness(policy, state_source='joint_states', state_topic='/joint_states',
                     state_joint_names=['b', 'a'], missing_state='wait')
    pub = h.tester.create_publisher(JointState, '/joint_states', 10)
    h.instruct('go')
    assert h.wait(lambda: pub.get_subscription_count() > 0)
    pub.publish(JointState(name=['a', 'b', 'c'], position=[1.0, 2.0, 3.0]))
    assert h.stream_until(lambda: h.got['chunk_info'])
    np.testing.assert_array_equal(policy.calls[-1][1], [2.0, 1.0])


def test_frames_wait_for_the_state_of_their_instant(make_harness):
    """A robot publishes the state and frames of one instant together and the frames may arrive first: the
    inference must use the state stamped with them, never the previous one."""
    policy = FakePolicy()
    policy.proprio_dim = 2
    h = make_harness(policy, state_source='joint_states', state_topic='/joint_states', missing_state='wait')
    pub = h.tester.create_publisher(JointState, '/joint_states', 10)
    h.instruct('go')
    assert h.wait(lambda: pub.get_subscription_count() > 0 and h.active() == 'go')
    previous = (h.now() - rclpy.duration.Duration(seconds=0.5)).to_msg()
    old = JointState(header=Header(stamp=previous), name=['a', 'b'], position=[-1.0, -1.0])
    assert h.wait(lambda: pub.publish(old) or h.node.health.state.latest() is not None)  # best effort: until it is in
    stamp = h.now().to_msg()
    frames = [image_msg(rgb_image(seed=i), stamp) for i in range(len(TOPICS))]
    waiting = 'a state as new as the frames on /joint_states'
    assert h.stream_until(lambda: policy.calls or waiting in h.node.health.waiting, msgs=frames)
    assert not policy.calls, 'inferred with the previous state'
    pub.publish(JointState(header=Header(stamp=stamp), name=['a', 'b'], position=[1.0, 2.0]))
    assert h.wait(lambda: h.got['chunk_info'])
    assert policy.calls and all(call[1].tolist() == [1.0, 2.0] for call in policy.calls)
    assert info_values(h.got['chunk_info'][0])['obs_stamp'] == f'{stamp.sec}.{stamp.nanosec:09d}'


def test_runtime_parameters_are_validated(make_harness):
    policy = FakePolicy()
    h = make_harness(policy)
    node = h.node
    assert not node.set_parameters([Parameter('pruning', value='bogus')])[0].successful
    result = node.set_parameters([Parameter('pruning', value='lightvla_star')])[0]
    assert not result.successful and 'not supported' in result.reason
    assert not node.set_parameters([Parameter('max_kept_tokens', value=-3)])[0].successful
    assert not node.set_parameters([Parameter('checkpoint', value='/elsewhere')])[0].successful
    assert node.set_parameters([Parameter('pruning', value='none'),
                                Parameter('max_kept_tokens', value=64)])[0].successful
    assert (policy.pruning, policy.max_kept_tokens) == ('none', 64)
    assert node.set_parameters([Parameter('max_kept_tokens', value=0)])[0].successful
    assert policy.max_kept_tokens is None
    h.instruct('go')
    assert h.stream_until(lambda: h.got['chunk_info'])
    status = h.wait_status('pruning', lambda s: True)
    assert info_values(status)['method'] == 'none'
    assert node.describe_parameter('checkpoint').read_only
    assert node.describe_parameter('max_kept_tokens').integer_range[0].to_value == 65536


def test_debug_image_only_while_subscribed(make_harness):
    h = make_harness()
    h.instruct('go')
    assert h.stream_until(lambda: len(h.got['chunk_info']) >= 2)
    images: list = []
    h.tester.create_subscription(Image, '/lightvla_node/debug_image', images.append, 5)
    assert h.stream_until(lambda: images)
    assert images[0].encoding == 'rgb8' and images[0].width == 2 * 224 + 4
    assert images[0].height == 224


def test_incompatible_qos_instruction_publisher(make_harness):
    h = make_harness()
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    h.tester.create_publisher(String, '/instruction', best_effort)
    status = h.wait_status('instruction', lambda s: 'BEST_EFFORT' in s.message)
    assert level(status) == 1 and 'RELIABLE' in status.message


def test_rejected_instruction_goes_idle(make_harness):
    h = make_harness()
    h.instruct('go')
    assert h.stream_until(lambda: h.got['chunk_info'])
    h.instruct('x' * 5000)
    status = h.wait_status('instruction', lambda s: 'too long' in s.message)
    assert level(status) == 1
    count = len(h.got['chunk_info'])
    h.stream_until(lambda: False, timeout=0.5)
    assert len(h.got['chunk_info']) <= count + 1  # at most one in flight when it arrived
    assert h.active() == ''


def test_mistyped_parameter_is_reported_not_fatal(tmp_path):
    context = Context()
    rclpy.init(context=context)
    try:
        node = LightVLANode(context=context, policy_factory=lambda settings: FakePolicy(),
                            parameter_overrides=[Parameter('checkpoint', value=str(tmp_path)),
                                                 Parameter('dt', value=1),
                                                 Parameter('max_kept_tokens', value=-5)])
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        assert spin_until(executor, lambda: node.model_state == 'failed', 5.0)
        assert 'parameter dt' in node.model_error
        assert 'parameter max_kept_tokens' in node.model_error
        assert node.get_parameter('dt').value == 0.05
        assert lifecycle_state(node) == 'unconfigured'  # configure failed; the node stays up
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_instruction_timeout_goes_idle(make_harness):
    h = make_harness(instruction_timeout=0.5)
    h.instruct('go')
    assert h.wait(lambda: h.active() == 'go')
    assert h.stream_until(lambda: h.got['chunk_info'])
    assert h.stream_until(lambda: h.active() == '', timeout=5.0)
    count = len(h.got['chunk_info'])
    h.stream_until(lambda: False, timeout=0.5)
    assert len(h.got['chunk_info']) <= count + 1


# ---------------------------------------------------------------------------------------------- lifecycle

def rss_bytes() -> int:
    """Resident memory of this process."""
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class CountingFactory:
    """Makes a fresh policy per configure and remembers which were released (holding none of them)."""

    def __init__(self, policy_type: type = FakePolicy) -> None:
        self.policy_type = policy_type
        self.made: list[weakref.ref] = []
        self.released = 0

    def __call__(self, settings: Any) -> Any:
        policy = self.policy_type()
        policy.release = lambda: setattr(self, 'released', self.released + 1)
        self.made.append(weakref.ref(policy))
        return policy


def test_lifecycle_walks_through_every_state_under_external_control(make_harness):
    factory = CountingFactory()
    h = make_harness(factory=factory, autostart=False, publish_actions=True)
    node = h.node
    assert lifecycle_state(node) == 'unconfigured' and node.model_state == 'unconfigured'
    status = h.wait_status('model', lambda s: True)
    assert level(status) == 0 and 'waiting for the configure transition' in status.message
    assert not factory.made and h.cameras[0].get_subscription_count() == 0

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert lifecycle_state(node) == 'inactive' and node.model_state == 'ready'
    h.wait_configured()
    h.instruct('go')
    h.stream_until(lambda: False, timeout=0.5)
    assert not h.got['action_chunk'] and not h.got['ee_twist']  # inactive: no inference

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert h.stream_until(lambda: len(h.got['ee_twist']) >= 2 and h.got['action_chunk'])

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    h.wait(lambda: False, 0.3)  # let what was sent before arrive
    assert h.got['ee_twist'][-1].twist.linear.x == 0.0  # motion stopped
    chunks, twists = len(h.got['action_chunk']), len(h.got['ee_twist'])
    h.stream_until(lambda: False, timeout=0.6)
    assert len(h.got['action_chunk']) <= chunks + 1 and len(h.got['ee_twist']) == twists

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS  # resumes the kept instruction
    assert h.stream_until(lambda: len(h.got['action_chunk']) > chunks + 1)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS

    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    gc.collect()
    assert lifecycle_state(node) == 'unconfigured' and node.model_state == 'unconfigured'
    assert factory.released == 1 and factory.made[0]() is None  # no reference to the policy is left
    assert h.wait(lambda: h.cameras[0].get_subscription_count() == 0)

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # configure again, then shut down
    assert len(factory.made) == 2
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert lifecycle_state(node) == 'finalized' and factory.released == 2


def test_shutdown_from_active_stops_the_robot(make_harness):
    h = make_harness(publish_actions=True)
    h.instruct('go')
    assert h.stream_until(lambda: any(t.twist.linear.x > 0 for t in h.got['ee_twist']))
    assert h.node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    h.wait(lambda: False, 0.3)
    assert h.got['ee_twist'][-1].twist.linear.x == 0.0
    assert lifecycle_state(h.node) == 'finalized'


def test_cleanup_gives_the_model_memory_back(make_harness):
    class HeavyPolicy(FakePolicy):
        def __init__(self) -> None:
            super().__init__()
            self.weights = np.ones(256 * 2**20 // 8)  # 256 MiB, touched

    factory = CountingFactory(HeavyPolicy)
    h = make_harness(factory=factory, autostart=False)
    gc.collect()
    before = rss_bytes()
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    loaded = rss_bytes()
    assert h.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    gc.collect()
    released = rss_bytes()
    mib = 2**20
    print(f'RSS: {before / mib:.0f} MiB before configure, {loaded / mib:.0f} MiB configured, '
          f'{released / mib:.0f} MiB after cleanup')
    assert loaded - before > 250 * mib
    assert loaded - released > 250 * mib


def test_configure_failure_is_reported_and_leaves_nothing_behind(make_harness):
    h = make_harness(factory=lambda settings: (_ for _ in ()).throw(RuntimeError('weights corrupt')),
                     autostart=False)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert lifecycle_state(h.node) == 'unconfigured'
    status = h.wait_status('model', lambda s: level(s) == 2)
    assert 'weights corrupt' in status.message
    assert h.cameras[0].get_subscription_count() == 0  # the endpoints of the failed attempt are gone


# ---------------------------------------------------------------------------------------------- clocks and QoS

def test_a_camera_clock_an_hour_behind_is_named_with_its_skew(make_harness):
    h = make_harness()
    h.instruct('go')
    h.send_frames(age=3600.0)
    status = h.wait_status('inputs', lambda s: 'behind the node clock' in s.message)
    assert level(status) == 1 and '/camera/image_raw' in status.message
    assert re.search(r'3600\.\d+ s behind', status.message)
    assert not h.got['chunk_info']
    assert h.stream_until(lambda: h.got['chunk_info'])  # fresh frames: chunks again, and the warning goes
    h.wait_status('inputs', lambda s: 'clock' not in s.message)


def test_a_camera_clock_an_hour_ahead_is_named_with_its_skew(make_harness):
    h = make_harness()
    h.instruct('go')
    h.send_frames(age=-3600.0)
    status = h.wait_status('inputs', lambda s: 'ahead of the node clock' in s.message)
    assert level(status) == 1 and re.search(r'(3599\.9|3600\.0)\d* s ahead', status.message)


def test_a_subscriber_with_incompatible_qos_on_an_output_is_reported(make_harness):
    h = make_harness()
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.tester.create_subscription(Float32MultiArray, '/action_chunk', lambda msg: None, latched)
    status = h.wait_status('outputs', lambda s: 'DURABILITY' in s.message)
    assert level(status) == 1 and 'a subscriber on /action_chunk gets nothing' in status.message


def test_a_model_that_fails_after_loading_is_released(make_harness):
    class BrokenWarmup(FakePolicy):
        def warmup(self) -> None:
            raise RuntimeError('CUDA error: out of memory')

    factory = CountingFactory(BrokenWarmup)
    h = make_harness(factory=factory, autostart=False)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert factory.released == 1 and 'out of memory' in h.node.model_error


# ---------------------------------------------------------------------------------------------- chunk execution

def test_open_loop_executes_whole_chunks_and_infers_only_when_they_are_done(make_harness):
    policy = FakePolicy()
    h = make_harness(policy, publish_actions=True, execution_mode='open_loop')
    h.instruct('go')
    assert h.wait(lambda: h.active() == 'go')
    assert h.stream_until(lambda: len(h.got['ee_twist']) >= 12, timeout=8.0)
    # 8-step chunks at dt 0.1 s while frames come at ~10 Hz: one inference per 8 executed steps (+ the one in flight)
    executed = sum(1 for t in h.got['ee_twist'] if t.twist.linear.x != 0.0 or t.twist.angular.x != 0.0)
    assert len(policy.calls) <= executed // 8 + 2
    status = h.wait_status('actions', lambda s: info_values(s).get('execution mode') == 'open_loop')
    values = info_values(status)
    assert int(values['steps executed']) >= 8 and values['steps executed per chunk (last)'] == '8'


def test_execution_mode_changes_at_run_time(make_harness):
    policy = FakePolicy()
    h = make_harness(policy, publish_actions=True)
    assert not h.node.set_parameters([Parameter('execution_mode', value='sometimes')])[0].successful
    assert not h.node.set_parameters([Parameter('async_threshold', value=1.5)])[0].successful
    assert h.node.set_parameters([Parameter('execution_mode', value='async'),
                                  Parameter('async_aggregation', value='average')])[0].successful
    h.instruct('go')
    assert h.stream_until(lambda: len(h.got['chunk_info']) >= 3)
    status = h.wait_status('actions', lambda s: int(info_values(s).get('blended steps', '0')) > 0)
    assert info_values(status)['execution mode'] == 'async'


# ---------------------------------------------------------------------------------------------- the real policy

def first_chunk(checkpoint: str, **overrides: Any) -> np.ndarray:
    """The first action chunk the node computes with the real policy on fixed frames (no state: zeros)."""
    from lightvla_ros.ros.node import load_policy

    h = Harness(load_policy, {'autostart': False, 'device': 'cpu', 'dtype': 'float32', 'center_crop': False,
                              'warmup': False, **overrides}, checkpoint)
    try:
        assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, h.node.model_error
        assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        h.wait_configured()
        h.instruct('pick up the bowl')
        assert h.wait(lambda: h.active() == 'pick up the bowl')
        assert h.stream_until(lambda: h.got['action_chunk'], timeout=60.0)
        return np.asarray(h.got['action_chunk'][0].data)
    finally:
        h.close()


def test_the_node_runs_compiled_with_buckets_and_quantized(random_tiny_checkpoint):
    checkpoint = str(random_tiny_checkpoint)
    plain = first_chunk(checkpoint)
    compiled = first_chunk(checkpoint, compile_mode='default', compile_backend='eager',
                           kept_token_buckets=[16, 64, 512])
    np.testing.assert_allclose(compiled, plain, atol=1e-5)  # buckets pad with masked slots: same result
    int8 = first_chunk(checkpoint, quantize='int8')
    assert np.all(np.isfinite(int8)) and np.abs(int8 - plain).max() < 0.5  # close, not equal (docs/performance.md)
