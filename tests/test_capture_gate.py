"""The gate that keeps the edit worker's CUDA graph captures out of training steps (igs2gs/capture_gate.py)."""

from __future__ import annotations

import threading
import time

from igs2gs.capture_gate import CaptureGate


def _capture_in_thread(gate: CaptureGate, events: list, timeout: float = 5.0) -> threading.Thread:
    def capture():
        with gate.capturing(timeout=timeout) as free:
            events.append(("capture starts", free))
            time.sleep(0.05)
            events.append("capture ends")

    thread = threading.Thread(target=capture)
    thread.start()
    return thread


def test_a_capture_waits_for_the_step_in_progress_and_the_next_step_for_the_capture() -> None:
    gate, events = CaptureGate(), []
    gate.enter_step()
    worker = _capture_in_thread(gate, events)
    time.sleep(0.1)
    assert events == [], "the capture started inside a training step"
    events.append("step ends")
    gate.leave_step()
    time.sleep(0.01)
    gate.enter_step()  # waits for the capture
    events.append("next step starts")
    worker.join()
    gate.leave_step()
    assert events == ["step ends", ("capture starts", True), "capture ends", "next step starts"]


def test_a_capture_runs_while_the_training_thread_waits_for_the_worker() -> None:
    gate, events = CaptureGate(), []
    gate.enter_step()
    with gate.waiting():
        worker = _capture_in_thread(gate, events)
        worker.join(timeout=2)
        events.append("wait ends")
    events.append("step goes on")
    gate.leave_step()
    assert events == [("capture starts", True), "capture ends", "wait ends", "step goes on"]


def test_the_training_thread_captures_inside_its_own_step_and_a_stuck_step_skips_the_capture() -> None:
    gate = CaptureGate()
    gate.enter_step()
    with gate.capturing(timeout=1.0) as free:  # the editor running in the training step itself
        assert free
    events: list = []
    started = time.perf_counter()
    _capture_in_thread(gate, events, timeout=0.2).join()
    assert events[0] == ("capture starts", False), "a step that never ends must not block the worker forever"
    assert time.perf_counter() - started < 2
    gate.leave_step()


def test_without_a_training_thread_captures_go_ahead() -> None:
    gate, events = CaptureGate(), []
    _capture_in_thread(gate, events, timeout=0.5).join()
    assert events == [("capture starts", True), "capture ends"]
