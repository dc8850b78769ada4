"""Pure builders for the node's diagnostics tasks.

Each builder returns a :class:`StatusReport` (level, message, key/value pairs) from plain data, so
the wording and the OK/WARN/ERROR rules are unit-tested without ROS. Levels use the byte values of
``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightvla_ros.ros.core.frames import CameraCounters
from lightvla_ros.ros.core.scheduler import SchedulerStats
from lightvla_ros.ros.core.stats import ActionCounters, PruningStats, RollingWindow

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}

# How long a fault (decode error, QoS event, rejected state) keeps its task at WARN.
RECENT_S = 10.0


@dataclass(frozen=True)
class StatusReport:
    """One diagnostics task result."""

    level: int
    message: str
    values: list[tuple[str, str]]


def _fmt(value: float | None, digits: int = 1, unit: str = '') -> str:
    if value is None:
        return 'n/a'
    return f'{value:.{digits}f}{unit}'


def _recent(at: float | None, now: float) -> bool:
    return at is not None and now - at <= RECENT_S


def _combine(problems: list[tuple[int, str]], ok_message: str) -> tuple[int, str]:
    if not problems:
        return OK, ok_message
    level = max(level for level, _ in problems)
    worst = [text for lvl, text in problems if lvl == level] + \
        [text for lvl, text in problems if lvl != level]
    return level, '; '.join(worst)


@dataclass
class ModelInfo:
    """What the diagnostics say about the model."""

    state: str  # unconfigured | loading | ready | failed (unconfigured with an error: configure failed)
    checkpoint: str
    device: str
    dtype: str
    stage: str = ''
    error: str = ''
    load_seconds: float | None = None
    num_images: int | None = None
    chunk_len: int | None = None
    action_dim: int | None = None
    use_proprio: bool | None = None
    inference_errors: int = 0
    last_inference_error: str = ''
    last_inference_error_at: float | None = None
    last_success_at: float | None = None


def model_status(info: ModelInfo) -> StatusReport:
    """ERROR when loading failed or the last inference raised; loading progress is reported."""
    values = [('checkpoint', info.checkpoint or '(not set)'), ('device', info.device),
              ('dtype', info.dtype), ('load state', info.state)]
    if info.stage:
        values.append(('load stage', info.stage))
    if info.load_seconds is not None:
        values.append(('load time (s)', _fmt(info.load_seconds, 1)))
    for key, value in (('cameras expected', info.num_images), ('chunk length', info.chunk_len),
                       ('action dims', info.action_dim), ('uses proprio', info.use_proprio)):
        if value is not None:
            values.append((key, str(value)))
    values.append(('inference errors', str(info.inference_errors)))
    if info.last_inference_error:
        values.append(('last inference error', info.last_inference_error))
    if info.state == 'failed':
        return StatusReport(ERROR, f'model failed to load: {info.error}', values)
    if info.state == 'unconfigured':
        if info.error:
            return StatusReport(ERROR, info.error, values)
        return StatusReport(OK, 'unconfigured: waiting for the configure transition', values)
    if info.state == 'loading':
        return StatusReport(OK, f'loading model: {info.stage}', values)
    failing = info.last_inference_error_at is not None and (
        info.last_success_at is None or info.last_inference_error_at > info.last_success_at)
    if failing:
        return StatusReport(ERROR, f'inference failed: {info.last_inference_error}', values)
    return StatusReport(OK, 'model ready', values)


@dataclass
class QosEvents:
    """Incompatible-QoS and lost-message events of one subscription."""

    incompatible: int = 0
    last_policy: str = ''
    last_incompatible_at: float | None = None
    lost: int = 0


@dataclass
class CameraReport:
    """Everything the inputs task needs to know about one camera."""

    topic: str
    kind: str
    qos: str
    publishers: int
    counters: CameraCounters
    events: QosEvents = field(default_factory=QosEvents)


@dataclass
class StateReport:
    """State-input facts for the inputs task."""

    source: str
    topic: str
    required: bool
    fallback: str
    publishers: int
    received: int
    rejected: int
    last_error: str
    last_error_at: float | None
    age: float | None


def describe_incompatible_qos(topic: str, policy: str, requested: str, side: str = 'subscription') -> str:
    """A plain-words explanation of an incompatible-QoS event and how to fix it.

    ``side`` is our endpoint: 'subscription' (a publisher cannot reach us) or 'publisher' (a subscriber cannot
    receive from us); ``requested`` is our endpoint's QoS.
    """
    policy = policy or 'QoS'
    if side == 'publisher':
        hint = {
            'RELIABILITY': 'the subscriber requires RELIABLE but this publisher offers BEST_EFFORT; subscribe with '
                           'best_effort reliability',
            'DURABILITY': 'the subscriber requires TRANSIENT_LOCAL but this publisher is VOLATILE; subscribe with '
                          'volatile durability (e.g. ros2 topic echo --qos-durability volatile)',
            'DEADLINE': 'the subscriber requests a shorter deadline than this publisher offers',
            'LIVELINESS': 'the subscriber requests a stronger liveliness than this publisher offers',
        }.get(policy, 'the subscriber and this publisher have incompatible QoS settings')
        return f'a subscriber on {topic} gets nothing ({policy} mismatch): {hint} (we offer {requested})'
    hint = {
        'RELIABILITY': ('the publisher is BEST_EFFORT but this subscription requires RELIABLE; '
                        'publish with reliable QoS, or override the subscription with '
                        f'qos_overrides.{topic}.subscription.reliability: best_effort'),
        'DURABILITY': ('the publisher is VOLATILE but this subscription requires '
                       'TRANSIENT_LOCAL; override the subscription durability to volatile'),
        'DEADLINE': 'the publisher offers a longer deadline than this subscription requests',
        'LIVELINESS': 'the publisher offers a weaker liveliness than this subscription requests',
    }.get(policy, 'the publisher and this subscription have incompatible QoS settings')
    return (f'a publisher on {topic} is not connected ({policy} mismatch): {hint} '
            f'(we request {requested})')


@dataclass(frozen=True)
class InputLimits:
    """The time limits the inputs task judges the cameras by (node parameters, seconds)."""

    camera_timeout: float = 2.0  # silent for longer: WARN
    max_image_age: float = 1.0  # stamps further behind the node clock: frames never used
    ahead_tolerance: float = 0.1  # stamps further ahead of the node clock: clock skew


@dataclass(frozen=True)
class SyncReport:
    """The last failure to match the cameras' stamps."""

    problem: str = ''
    at: float | None = None
    failures: int = 0


def clock_skew_problem(topic: str, skew: float, limits: InputLimits) -> str:
    """A warning when a camera's stamps are far from the node clock (``skew`` = node clock - stamp), else ''."""
    if skew > limits.max_image_age:
        return (f'camera {topic}: stamps are {skew:.3f} s behind the node clock (max_image_age '
                f'{limits.max_image_age:g} s), so its frames are never used; check the camera clock '
                '(chrony/PTP) and that both nodes agree on use_sim_time')
    if -skew > limits.ahead_tolerance:
        return (f'camera {topic}: stamps are {-skew:.3f} s ahead of the node clock (tolerance '
                f'{limits.ahead_tolerance:g} s); frames are used as if they were that new: check the camera clock '
                '(chrony/PTP) and that both nodes agree on use_sim_time')
    return ''


def inputs_status(cameras: list[CameraReport], state: StateReport | None, now: float,
                  limits: InputLimits = InputLimits(), sync: SyncReport = SyncReport()) -> StatusReport:
    """WARN when a camera is silent, has no publisher, sends undecodable frames, mismatched QoS or stamps far from
    the node clock, or when the cameras' stamps could not be matched recently."""
    silent_after = limits.camera_timeout
    problems: list[tuple[int, str]] = []
    values: list[tuple[str, str]] = [('stamp mismatches', str(sync.failures))]
    if sync.problem and (sync.at is None or _recent(sync.at, now)):
        problems.append((WARN, sync.problem))
    for i, cam in enumerate(cameras):
        c = cam.counters
        age = None if c.last_received is None else now - c.last_received
        prefix = f'camera {i}'
        values += [(f'{prefix} topic', f'{cam.topic} ({cam.kind})'),
                   (f'{prefix} rate (Hz)', _fmt(c.rate(now), 1)),
                   (f'{prefix} age (s)', _fmt(age, 2)),
                   (f'{prefix} received', str(c.received)), (f'{prefix} used', str(c.used)),
                   (f'{prefix} dropped', str(c.dropped)), (f'{prefix} stale', str(c.stale)),
                   (f'{prefix} duplicate frames ignored', str(c.duplicates)),
                   (f'{prefix} decode errors', str(c.decode_errors)),
                   (f'{prefix} publishers', str(cam.publishers)),
                   (f'{prefix} QoS', cam.qos),
                   (f'{prefix} incompatible QoS events', str(cam.events.incompatible)),
                   (f'{prefix} lost messages', str(cam.events.lost)),
                   (f'{prefix} clock skew (s)', _fmt(c.last_skew, 3))]
        if c.last_error:
            values.append((f'{prefix} last error', c.last_error))
        if _recent(cam.events.last_incompatible_at, now) or (
                cam.events.incompatible and cam.publishers == 0):
            problems.append((WARN, describe_incompatible_qos(cam.topic, cam.events.last_policy,
                                                             cam.qos)))
        if c.last_received is None:
            detail = 'no publisher' if cam.publishers == 0 else f'{cam.publishers} publisher(s)'
            problems.append((WARN, f'no image received on {cam.topic} yet ({detail})'))
        elif age is not None and age > silent_after:
            problems.append((WARN, f'camera {cam.topic} silent for {age:.1f} s'))
        if _recent(c.last_error_at, now):
            problems.append((WARN, f'bad frame on {cam.topic}: {c.last_error}'))
        if c.last_skew is not None and age is not None and age <= silent_after:
            skew_problem = clock_skew_problem(cam.topic, c.last_skew, limits)
            if skew_problem:
                problems.append((WARN, skew_problem))
        if c.unstamped:
            values.append((f'{prefix} unstamped frames', str(c.unstamped)))
    if state is not None:
        values += [('state source', state.source), ('state topic', state.topic or 'n/a'),
                   ('state received', str(state.received)),
                   ('state rejected', str(state.rejected)),
                   ('state age (s)', _fmt(state.age, 2))]
        if state.last_error:
            values.append(('state last error', state.last_error))
        if state.required:
            if _recent(state.last_error_at, now):
                problems.append((WARN, f'bad state on {state.topic}: {state.last_error}'))
            elif state.age is None:
                what = ('using a zero state vector' if state.fallback == 'zeros'
                        else 'not running inference')
                where = state.topic if state.source != 'none' else 'any topic (state_source none)'
                problems.append((WARN, f'no state received on {where}; {what}'))
    return StatusReport(*_combine(problems, f'{len(cameras)} camera(s) streaming'), values)


@dataclass
class InstructionReport:
    """Instruction facts for the instruction task."""

    topic: str
    text: str | None
    epoch: int
    age: float | None
    repeats: int
    rejected: int
    last_rejection: str
    publishers: int
    events: QosEvents
    qos: str


def instruction_status(report: InstructionReport, now: float) -> StatusReport:
    """OK while idle or running; WARN on QoS mismatch or a recently rejected instruction."""
    values = [('topic', report.topic), ('instruction', report.text or '(idle)'),
              ('epoch', str(report.epoch)), ('age (s)', _fmt(report.age, 1)),
              ('repeats ignored', str(report.repeats)), ('rejected', str(report.rejected)),
              ('publishers', str(report.publishers)), ('QoS', report.qos),
              ('incompatible QoS events', str(report.events.incompatible))]
    if report.last_rejection:
        values.append(('last rejection', report.last_rejection))
    problems: list[tuple[int, str]] = []
    if _recent(report.events.last_incompatible_at, now) or (
            report.events.incompatible and report.publishers == 0):
        problems.append((WARN, describe_incompatible_qos(report.topic, report.events.last_policy,
                                                         report.qos)))
    if report.rejected and report.text is None and report.last_rejection:
        problems.append((WARN, f'instruction rejected: {report.last_rejection}'))
    ok = f'running "{report.text}"' if report.text else f'idle, waiting on {report.topic}'
    return StatusReport(*_combine(problems, ok), values)


def inference_status(latency_ms: RollingWindow, budget_ms: float, now: float, device_name: str,
                     dtype: str, waiting_reason: str) -> StatusReport:
    """Latency percentiles and rate; WARN when p95 latency exceeds the chunk budget."""
    summary = latency_ms.summary()
    values = [('device', device_name), ('dtype', dtype),
              ('inferences', str(latency_ms.count)),
              ('rate (Hz)', _fmt(latency_ms.rate(now), 2)),
              ('latency budget (ms)', _fmt(budget_ms, 0))]
    if summary:
        values += [('latency last (ms)', _fmt(summary['last'])),
                   ('latency p50 (ms)', _fmt(summary['p50'])),
                   ('latency p95 (ms)', _fmt(summary['p95'])),
                   ('latency max (ms)', _fmt(summary['max']))]
    if waiting_reason:
        values.append(('waiting for', waiting_reason))
    if summary and summary['p95'] > budget_ms:
        return StatusReport(WARN, f'p95 latency {summary["p95"]:.0f} ms exceeds the chunk budget '
                                  f'{budget_ms:.0f} ms; chunks arrive after they run out', values)
    if not summary:
        if not waiting_reason:
            return StatusReport(OK, 'no inference yet', values)
        waiting = waiting_reason if waiting_reason.startswith('waiting') else f'waiting for {waiting_reason}'
        return StatusReport(OK, f'no inference yet: {waiting}', values)
    return StatusReport(OK, f'p50 {summary["p50"]:.0f} ms, p95 {summary["p95"]:.0f} ms', values)


def pruning_status(stats: PruningStats) -> StatusReport:
    """Kept visual tokens (last/mean/min/max), keep ratio and estimated FLOPs saved."""
    kept = stats.kept.summary()
    values = [('method', stats.method or 'n/a'),
              ('max kept tokens', 'no cap' if not stats.max_kept_tokens
               else str(stats.max_kept_tokens)),
              ('visual tokens total', str(stats.num_patches))]
    if not kept:
        return StatusReport(OK, 'no prediction yet', values)
    ratio = stats.keep_ratio.summary() or {}
    saved = stats.flops_saved.summary() or {}
    gflops = stats.gflops.summary() or {}
    values += [('kept tokens last', str(int(kept['last']))),
               ('kept tokens mean', _fmt(kept['mean'], 1)),
               ('kept tokens min', str(int(kept['min']))),
               ('kept tokens max', str(int(kept['max']))),
               ('keep ratio last', _fmt(ratio.get('last'), 3)),
               ('keep ratio mean', _fmt(ratio.get('mean'), 3)),
               ('FLOPs saved last (%)', _fmt(100 * saved['last'] if saved else None, 1)),
               ('FLOPs saved mean (%)', _fmt(100 * saved['mean'] if saved else None, 1)),
               ('GFLOPs per inference last', _fmt(gflops.get('last'), 2))]
    message = (f'kept {int(kept["last"])}/{stats.num_patches} tokens '
               f'(ratio {ratio.get("last", 0.0):.2f}), '
               f'~{100 * saved.get("last", 0.0):.0f}% FLOPs saved')
    return StatusReport(OK, message, values)


def actions_status(counters: ActionCounters, now: float, publish_actions: bool,
                   action_space: str) -> StatusReport:
    """Chunk counts; ERROR after a non-finite chunk until a good one; WARN while chunks arrive too late to execute."""
    since = None if counters.last_published_at is None else now - counters.last_published_at
    values = [('action space', action_space),
              ('publish_actions (~/enable)', str(publish_actions)),
              ('chunks published', str(counters.published)),
              ('chunks clipped', str(counters.clipped_chunks)),
              ('elements clipped', str(counters.clipped_elements)),
              ('chunks rejected (non-finite)', str(counters.rejected_nonfinite)),
              ('chunks too late to execute (all steps elapsed)', str(counters.stale)),
              ('results discarded (instruction changed)', str(counters.discarded_epoch)),
              ('steps trimmed last', str(counters.trimmed_steps_last)),
              ('time since last chunk (s)', _fmt(since, 2))]
    if counters.nonfinite_since_last_good:
        return StatusReport(ERROR, 'model produced non-finite actions; chunk not published',
                            values)
    gate = '' if publish_actions else ' (actuation topics gated off: publish_actions false)'
    if counters.last_stale_at is not None and (
            counters.last_fresh_at is None or counters.last_stale_at > counters.last_fresh_at):
        return StatusReport(WARN, 'chunks arrive after all their steps have elapsed (inference slower than '
                                  'chunk length x dt): published on action_chunk but not executed' + gate, values)
    return StatusReport(OK, f'{counters.published} chunk(s) published' + gate, values)


def execution_values(mode: str, queued: int, stats: SchedulerStats) -> list[tuple[str, str]]:
    """How chunks are being executed (the scheduler's numbers), for the actions task."""
    per_chunk = list(stats.executed_per_chunk)
    return [('execution mode', mode), ('steps queued', str(queued)),
            ('steps executed', str(stats.steps_executed)),
            ('steps executed per chunk (last)', str(per_chunk[-1]) if per_chunk else 'n/a'),
            ('steps executed per chunk (mean)', _fmt(sum(per_chunk) / len(per_chunk), 2) if per_chunk else 'n/a'),
            ('steps dropped (time passed)', str(stats.steps_dropped)), ('blended steps', str(stats.blends)),
            ('gaps (ticks with nothing to execute)', str(stats.gaps))]


@dataclass
class OutputReport:
    """One output topic as the outputs task sees it."""

    topic: str
    qos: str
    subscribers: int
    events: QosEvents


def outputs_status(outputs: list[OutputReport], now: float) -> StatusReport:
    """WARN when a subscriber to one of our topics cannot connect because of its QoS."""
    problems: list[tuple[int, str]] = []
    values: list[tuple[str, str]] = []
    for out in outputs:
        values += [(f'{out.topic} subscribers', str(out.subscribers)),
                   (f'{out.topic} incompatible QoS events', str(out.events.incompatible))]
        if _recent(out.events.last_incompatible_at, now) or (out.events.incompatible and out.subscribers == 0):
            problems.append((WARN, describe_incompatible_qos(out.topic, out.events.last_policy, out.qos,
                                                             side='publisher')))
    subscribers = sum(out.subscribers for out in outputs)
    return StatusReport(*_combine(problems, f'{len(outputs)} topic(s), {subscribers} subscription(s)'), values)
