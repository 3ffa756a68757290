"""The process lifecycle: every legal transition, every illegal one raises, the bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from host.lifecycle import TRANSITIONS, IllegalTransition, ProcessLifecycle, ProcessState
from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import connectivity

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_values_equal_the_admin_proto() -> None:
    for state in ProcessState:
        assert admin_pb2.ProcessState.Name(state.value) == f"PROCESS_STATE_{state.name}"
    assert set(TRANSITIONS) == set(ProcessState)


@pytest.mark.parametrize(
    ("source", "target"), [(s, t) for s, targets in TRANSITIONS.items() for t in targets]
)
def test_legal_transitions(source: ProcessState, target: ProcessState) -> None:
    moved = ProcessLifecycle(source, T0, "boom", 2).to(target, now=lambda: T1)
    assert moved.state is target
    assert moved.since == T1


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in ProcessState for t in ProcessState if t not in TRANSITIONS[s]],
)
def test_illegal_transitions_raise(source: ProcessState, target: ProcessState) -> None:
    life = ProcessLifecycle(source, T0, "boom", 2)
    with pytest.raises(IllegalTransition, match=f"{source.name} -> {target.name}"):
        life.to(target)


def test_illegal_transition_is_the_sdk_kind() -> None:
    assert issubclass(IllegalTransition, connectivity.IllegalTransition)


def test_every_state_is_reachable_from_stopped_and_can_get_back() -> None:
    seen = {ProcessState.STOPPED}
    frontier = [ProcessState.STOPPED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(ProcessState)
    for state in ProcessState:  # no trap: a stop is possible from everywhere
        assert state == ProcessState.STOPPED or _reaches(state, ProcessState.STOPPED)


def _reaches(source: ProcessState, goal: ProcessState) -> bool:
    seen, frontier = {source}, [source]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target == goal:
                return True
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return False


def test_a_crash_loop_counts_attempts_and_serving_resets() -> None:
    life = ProcessLifecycle()
    assert life.state == ProcessState.STOPPED
    assert life.attempts == 0 and life.last_error == ""
    for expected in (1, 2, 3):
        life = life.to(ProcessState.STARTING).to(ProcessState.CRASHED, "exited with code 1")
        life = life.to(ProcessState.BACKOFF)
        assert life.attempts == expected
        assert life.last_error == "exited with code 1"
    life = life.to(ProcessState.STARTING)
    assert life.attempts == 3  # still counting while it tries
    life = life.to(ProcessState.HANDSHAKING).to(ProcessState.SERVING)
    assert life.attempts == 0
    assert life.last_error == ""


def test_a_new_error_replaces_the_old_and_stopped_keeps_it() -> None:
    life = ProcessLifecycle(ProcessState.SERVING, T0, "", 0)
    life = life.to(ProcessState.CRASHED, "health failed").to(ProcessState.BACKOFF)
    life = life.to(ProcessState.STOPPED)
    assert life.attempts == 0
    assert life.last_error == "health failed"
    life = life.to(ProcessState.STARTING).to(ProcessState.CRASHED, "no handshake")
    assert life.last_error == "no handshake"


def test_values_are_immutable() -> None:
    life = ProcessLifecycle()
    moved = life.to(ProcessState.STARTING)
    assert life.state == ProcessState.STOPPED
    assert moved is not life
    with pytest.raises(AttributeError):
        life.state = ProcessState.SERVING  # type: ignore[misc]
