"""Diagnostics status builders: levels and plain-words messages."""

from lightvla_ros.ros.core.frames import CameraCounters
from lightvla_ros.ros.core.stats import ActionCounters, PruningStats, RollingWindow
from lightvla_ros.ros.core.status import (
    ERROR,
    OK,
    WARN,
    CameraReport,
    InputLimits,
    InstructionReport,
    ModelInfo,
    OutputReport,
    QosEvents,
    StateReport,
    SyncReport,
    actions_status,
    inference_status,
    inputs_status,
    instruction_status,
    model_status,
    outputs_status,
    pruning_status,
)

LIMITS = InputLimits(camera_timeout=2.0, max_image_age=1.0, ahead_tolerance=0.1)


def test_model_levels():
    info = ModelInfo('loading', '/ckpt', 'cuda', 'bfloat16', stage='warming up')
    assert model_status(info).level == OK and 'warming up' in model_status(info).message
    info.state, info.error = 'failed', "checkpoint folder '/x' does not exist"
    report = model_status(info)
    assert report.level == ERROR and '/x' in report.message
    info.state, info.error = 'ready', ''
    assert model_status(info).level == OK
    info.last_inference_error, info.last_inference_error_at = 'CUDA out of memory', 5.0
    assert model_status(info).level == ERROR
    info.last_success_at = 6.0
    assert model_status(info).level == OK
    waiting = model_status(ModelInfo('unconfigured', '', 'auto', 'auto'))
    assert waiting.level == OK and 'waiting for the configure transition' in waiting.message
    failed = model_status(ModelInfo('unconfigured', '', 'auto', 'auto', error='no checkpoint configured'))
    assert failed.level == ERROR and 'no checkpoint' in failed.message


def camera(counters: CameraCounters, publishers: int = 1, events: QosEvents | None = None):
    return CameraReport('/cam', 'raw', 'BEST_EFFORT', publishers, counters, events or QosEvents())


def test_inputs_ok_silent_and_bad_frames():
    c = CameraCounters(received=10, last_received=99.5)
    c.arrivals.extend([99.0, 99.5])
    assert inputs_status([camera(c)], None, 100.0, LIMITS).level == OK
    report = inputs_status([camera(c)], None, 105.0, LIMITS)
    assert report.level == WARN and 'silent for 5.5 s' in report.message
    never = inputs_status([camera(CameraCounters(), publishers=0)], None, 1.0, LIMITS)
    assert never.level == WARN and 'no publisher' in never.message
    bad = CameraCounters(received=1, last_received=99.9, last_error='unsupported encoding',
                         last_error_at=99.9, decode_errors=1)
    report = inputs_status([camera(bad)], None, 100.0, LIMITS)
    assert report.level == WARN and 'unsupported encoding' in report.message
    assert ('camera 0 decode errors', '1') in report.values


def test_inputs_count_ignored_duplicates_without_a_warning():
    """Re-sent frames (a lockstep simulator waiting for its chunk, a bridge echo) are expected, and harmless."""
    c = CameraCounters(received=12, duplicates=3, last_received=99.5)
    report = inputs_status([camera(c)], None, 100.0, LIMITS)
    assert report.level == OK and ('camera 0 duplicate frames ignored', '3') in report.values


def test_inputs_qos_incompatibility_in_plain_words():
    c = CameraCounters()
    events = QosEvents(incompatible=1, last_policy='RELIABILITY', last_incompatible_at=99.0)
    report = inputs_status([camera(c, publishers=0, events=events)], None, 100.0, LIMITS)
    assert report.level == WARN
    assert 'BEST_EFFORT but this subscription requires RELIABLE' in report.message


def test_inputs_state_fallback_warns():
    c = CameraCounters(received=1, last_received=100.0)
    state = StateReport('float32_array', '/state', True, 'zeros', 0, 0, 0, '', None, None)
    report = inputs_status([camera(c)], state, 100.0, LIMITS)
    assert report.level == WARN and 'zero state vector' in report.message
    state.last_error, state.last_error_at = 'state contains NaN or infinite values', 99.0
    assert 'NaN' in inputs_status([camera(c)], state, 100.0, LIMITS).message


def test_instruction_status():
    events = QosEvents()
    report = InstructionReport('/instruction', None, 0, None, 0, 0, '', 1, events, 'RELIABLE')
    assert instruction_status(report, 0.0).level == OK
    report.rejected, report.last_rejection = 1, 'instruction too long (9999 characters, limit 512)'
    assert 'too long' in instruction_status(report, 0.0).message
    report.events = QosEvents(1, 'RELIABILITY', 1.0)
    assert 'BEST_EFFORT' in instruction_status(report, 2.0).message


def test_inference_budget_warning():
    window = RollingWindow()
    assert inference_status(window, 400.0, 0.0, 'cpu', 'float32', 'an instruction').message == \
        'no inference yet: waiting for an instruction'
    assert inference_status(window, 400.0, 0.0, 'cpu', 'float32', 'waiting for a fresh frame from camera(s) 1'
                            ).message == 'no inference yet: waiting for a fresh frame from camera(s) 1'
    for i in range(10):
        window.add(100.0 + i, float(i))
    report = inference_status(window, 400.0, 10.0, 'cpu', 'float32', '')
    assert report.level == OK and ('latency p95 (ms)', '108.5') in report.values
    assert inference_status(window, 50.0, 10.0, 'cpu', 'float32', '').level == WARN


def test_pruning_and_actions():
    stats = PruningStats(method='lightvla', num_patches=512)
    assert pruning_status(stats).message == 'no prediction yet'
    for kept in (100, 80, 120):
        stats.kept.add(kept, 0.0)
        stats.keep_ratio.add(kept / 512, 0.0)
        stats.flops_saved.add(0.4, 0.0)
    report = pruning_status(stats)
    values = dict(report.values)
    assert values['kept tokens min'] == '80' and values['kept tokens max'] == '120'
    assert values['kept tokens mean'] == '100.0' and values['FLOPs saved last (%)'] == '40.0'
    counters = ActionCounters(published=3)
    assert actions_status(counters, 0.0, True, 'eef_delta').level == OK
    assert 'gated off' in actions_status(counters, 0.0, False, 'eef_delta').message
    counters.nonfinite_since_last_good = True
    assert actions_status(counters, 0.0, True, 'eef_delta').level == ERROR


def test_camera_clock_skew_is_named_with_its_size():
    behind = CameraCounters(received=5, last_received=100.0, last_skew=3600.2)
    report = inputs_status([camera(behind)], None, 100.0, LIMITS)
    assert report.level == WARN
    assert 'camera /cam: stamps are 3600.200 s behind the node clock' in report.message
    assert 'never used' in report.message and ('camera 0 clock skew (s)', '3600.200') in report.values
    ahead = CameraCounters(received=5, last_received=100.0, last_skew=-3600.0)
    assert 'stamps are 3600.000 s ahead of the node clock' in inputs_status([camera(ahead)], None, 100.0,
                                                                            LIMITS).message
    fine = CameraCounters(received=5, last_received=100.0, last_skew=0.03)
    assert inputs_status([camera(fine)], None, 100.0, LIMITS).level == OK


def test_a_sync_warning_does_not_outlive_its_cause():
    c = CameraCounters(received=5, last_received=100.0)
    sync = SyncReport('camera stamps differ by 500 ms (sync_tolerance 100 ms)', at=99.0, failures=3)
    assert 'differ by 500 ms' in inputs_status([camera(c)], None, 100.0, LIMITS, sync).message
    c.last_received = 130.0
    later = inputs_status([camera(c)], None, 130.0, LIMITS, sync)
    assert later.level == OK and ('stamp mismatches', '3') in later.values


def test_a_chunk_too_late_to_execute_warns_until_a_fresh_one_arrives():
    counters = ActionCounters(published=3, stale=1, last_published_at=9.0, last_fresh_at=8.0, last_stale_at=9.0)
    report = actions_status(counters, 10.0, True, 'eef_delta')
    assert report.level == WARN and 'not executed' in report.message
    assert ('chunks too late to execute (all steps elapsed)', '1') in report.values
    counters.last_fresh_at = 9.5
    assert actions_status(counters, 10.0, True, 'eef_delta').level == OK


def test_output_qos_mismatch_names_the_subscriber_side():
    events = QosEvents(incompatible=1, last_policy='DURABILITY', last_incompatible_at=99.0)
    report = outputs_status([OutputReport('/action_chunk', 'RELIABLE, VOLATILE, KEEP_LAST depth 10', 0, events)],
                            100.0)
    assert report.level == WARN and 'a subscriber on /action_chunk gets nothing (DURABILITY mismatch)' in report.message
    assert 'TRANSIENT_LOCAL' in report.message
    quiet = outputs_status([OutputReport('/action_chunk', 'RELIABLE', 2, QosEvents())], 100.0)
    assert quiet.level == OK and quiet.message == '1 topic(s), 2 subscription(s)'
