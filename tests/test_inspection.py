"""``inspect``'s accuracy rows: the manifest's ``accuracy`` summary in words, the candidate named."""

from __future__ import annotations

from trtforge.inspection import accuracy_rows
from trtforge.manifest import SKIPPED_ACCURACY

SIMULATED = {
    "passed": True,
    "measured": True,
    "candidate": "simulated",
    "emulation": "fp16 storage: Cast(FLOAT16)->Cast(FLOAT) after every tensor",
    "data": "files",
    "samples": 397,
    "report": "m.accuracy.json",
    "checked_utc": "2026-12-08T02:37:33+00:00",
    "task_accuracy": {"logits": {"reference": 0.9748, "candidate": 0.9723, "samples": 397}},
}


def test_a_simulated_pass_is_the_emulations_and_says_so() -> None:
    rows = dict(accuracy_rows(SIMULATED))
    assert (
        rows["accuracy"]
        == "passed (simulated) on 397 samples from the spec's data files, checked 2026-12-08T02:37:33+00:00"
    )
    assert (
        rows["candidate"]
        == "simulated, no engine ran; emulated: fp16 storage: Cast(FLOAT16)->Cast(FLOAT) after every tensor"
    )
    assert rows["task accuracy"] == "logits: reference 97.48%, candidate (simulated) 97.23% on 397 labelled samples"
    assert rows["report"] == "m.accuracy.json"


def test_a_failed_engine_gate_on_random_inputs() -> None:
    failed = {
        **SIMULATED,
        "passed": False,
        "candidate": "engine",
        "data": "random",
        "task_accuracy": {},
    }
    del failed["emulation"]
    rows = accuracy_rows(failed)
    assert rows[0] == (
        "accuracy",
        "failed (engine) on 397 samples of seeded random inputs, checked 2026-12-08T02:37:33+00:00",
    )
    assert ("candidate", "engine") in rows
    assert not any(key == "task accuracy" for key, _ in rows)


def test_skipped_and_absent_gates() -> None:
    assert accuracy_rows(SKIPPED_ACCURACY) == [("accuracy", "skipped: accuracy.enabled is false in the spec")]
    assert accuracy_rows(None) == [("accuracy", "not checked")]
