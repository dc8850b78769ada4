"""Instruction normalisation, repeats, epochs, stop and rejection."""

from lightvla_ros.ros.core.instructions import InstructionEventKind as Kind
from lightvla_ros.ros.core.instructions import InstructionTracker, instruction_key, normalize_instruction


def test_normalisation():
    assert normalize_instruction('  pick   up\tthe bowl \n') == 'pick up the bowl'
    assert instruction_key('Pick up the bowl.') == instruction_key('pick up  the bowl')


def test_repeat_is_not_a_new_task():
    tracker = InstructionTracker()
    first = tracker.update('pick up the bowl', 1.0)
    assert first.kind is Kind.NEW and first.epoch == 1
    again = tracker.update('  Pick up the bowl. ', 2.0)
    assert again.kind is Kind.REPEAT and again.epoch == 1 and tracker.repeats == 1
    snap = tracker.snapshot()
    assert snap.text == 'pick up the bowl' and snap.received_at == 1.0 and snap.refreshed_at == 2.0


def test_new_text_bumps_epoch_and_stop_goes_idle():
    tracker = InstructionTracker(stop_words=('stop',))
    tracker.update('a', 0.0)
    assert tracker.update('b', 0.0).epoch == 2
    stop = tracker.update('', 0.0)
    assert stop.kind is Kind.STOP and stop.epoch == 3 and tracker.snapshot().text is None
    assert tracker.update('   ', 0.0).kind is Kind.REPEAT  # already idle: nothing changes
    tracker.update('c', 0.0)
    assert tracker.update('STOP', 0.0).kind is Kind.STOP


def test_rejections_stop_the_task():
    tracker = InstructionTracker(max_chars=10)
    tracker.update('go', 0.0)
    event = tracker.update('x' * 11, 0.0)
    assert event.kind is Kind.REJECTED and 'too long' in event.reason
    assert tracker.snapshot().text is None and tracker.rejected == 1
    event = tracker.update('a\x00b', 0.0)
    assert event.kind is Kind.REJECTED and 'control' in event.reason


def test_external_stop():
    tracker = InstructionTracker()
    tracker.update('go', 0.0)
    assert tracker.stop('timeout').kind is Kind.STOP
    assert tracker.stop('again').kind is Kind.REPEAT
