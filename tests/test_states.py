"""The transition tables of scheduler/core/schema.py, checked pair by pair against a copy written out
here by hand: this copy is the spec, so a change to the schema must be made here too.  HPC
Pack's Finishing is not a state of hpcq (nothing could observe it: see schema.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from scheduler.core import states
from scheduler.core.schema import lua_preamble
from scheduler.core.states import JobState, TaskState, job_can, task_can

TASK_ALLOWED = {
    "Configuring": {"Submitted", "Canceled"},
    "Submitted": {"Validating", "Queued", "Failed", "Canceled"},
    "Validating": {"Queued", "Failed", "Canceled"},
    # -> Finished: HPC Pack's Finish (hpcq task finish / job finish) before the task ran
    "Queued": {"Dispatching", "Running", "Canceling", "Canceled", "Finished"},
    "Dispatching": {"Running", "Queued", "Failed", "Canceled", "Finished"},
    "Running": {"Finished", "Failed", "Canceling", "Queued"},
    "Finished": {"Queued"},
    "Canceling": {"Failed", "Canceled", "Queued", "Finished"},
    "Failed": {"Queued"},
    "Canceled": {"Queued"},
}

JOB_ALLOWED = {
    "Configuring": {"Submitted", "Canceled"},
    "Submitted": {"Validating", "Queued", "Failed", "Canceled"},
    "Validating": {"Queued", "Failed", "Canceled"},
    "Queued": {"Running", "Finished", "Failed", "Canceling", "Canceled"},
    "Running": {"Queued", "Finished", "Failed", "Canceling", "Canceled"},
    "Finished": {"Queued", "Running"},
    "Canceling": {"Canceled"},
    "Failed": {"Queued", "Running"},
    "Canceled": {"Queued", "Running"},
}

TASK_NAMES = ["Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running",
              "Finished", "Failed", "Canceling", "Canceled"]
JOB_NAMES = ["Configuring", "Submitted", "Validating", "Queued", "Running",
             "Finished", "Failed", "Canceling", "Canceled"]


@pytest.mark.unit
def test_state_names():
    assert [s.value for s in TaskState] == TASK_NAMES
    assert [s.value for s in JobState] == JOB_NAMES
    assert set(TASK_ALLOWED) == set(TASK_NAMES)
    assert set(JOB_ALLOWED) == set(JOB_NAMES)
    for s in TaskState:
        assert str(s) == s.value and s == s.value
    for s in JobState:
        assert str(s) == s.value and s == s.value


@pytest.mark.unit
@pytest.mark.parametrize("src,dst", list(itertools.product(TASK_NAMES, TASK_NAMES)))
def test_task_transition(src, dst):
    expected = dst in TASK_ALLOWED[src]
    assert task_can(src, dst) is expected
    assert task_can(TaskState(src), TaskState(dst)) is expected


@pytest.mark.unit
@pytest.mark.parametrize("src,dst", list(itertools.product(JOB_NAMES, JOB_NAMES)))
def test_job_transition(src, dst):
    expected = dst in JOB_ALLOWED[src]
    assert job_can(src, dst) is expected
    assert job_can(JobState(src), JobState(dst)) is expected


@pytest.mark.unit
def test_tables_have_no_self_loops():
    for s in TaskState:
        assert not task_can(s, s)
    for s in JobState:
        assert not job_can(s, s)


@pytest.mark.unit
def test_unknown_state_is_an_error():
    with pytest.raises(ValueError):
        task_can("Queued", "Bogus")
    with pytest.raises(ValueError):
        job_can("Bogus", "Queued")
    with pytest.raises(ValueError):
        job_can("Queued", "Dispatching")  # a task state, not a job state


def _names(fs):
    return {s.value for s in fs}


@pytest.mark.unit
def test_state_sets():
    assert _names(states.TASK_END) == {"Finished", "Failed", "Canceled"}
    assert _names(states.JOB_END) == {"Finished", "Failed", "Canceled"}
    assert _names(states.TASK_ON_WORKER) == {"Dispatching", "Running", "Canceling"}
    assert _names(states.CANCEL_TASK_FROM) == {
        "Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running", "Canceling"}
    assert _names(states.REQUEUE_TASK_FROM) == {"Failed", "Canceled", "Running", "Canceling", "Queued"}
    assert _names(states.CANCEL_JOB_FROM) == {
        "Configuring", "Submitted", "Validating", "Queued", "Running", "Canceling"}
    assert _names(states.REQUEUE_JOB_FROM) == {"Canceled", "Failed", "Running"}


@pytest.mark.unit
def test_end_states_only_leave_by_requeue():
    for s in states.TASK_END:
        assert _names(states.TASK_TRANSITIONS[s]) == {"Queued"}
    for s in states.JOB_END:
        assert _names(states.JOB_TRANSITIONS[s]) <= {"Queued", "Running"}


@pytest.mark.unit
def test_lua_preamble_names_every_state():
    lua = lua_preamble()
    for name in set(TASK_NAMES) | set(JOB_NAMES):
        assert f'["{name}"]' in lua and f'{name}="{name}"' in lua, name
    for var in ("S", "TASK_T", "JOB_T", "TASK_ON_ENTER", "JOB_ON_ENTER", "TASK_END", "JOB_END",
                "TASK_ON_WORKER", "TASK_PENDING", "CANCEL_TASK_FROM", "REQUEUE_TASK_FROM",
                "CANCEL_JOB_FROM", "REQUEUE_JOB_FROM", "K", "MSG"):
        assert re.search(rf"^local {var} = \{{", lua, re.M), var


@pytest.mark.unit
def test_lua_preamble_looks_like_lua():
    lua = lua_preamble()
    depth = 0
    for ch in lua:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            assert depth >= 0
    assert depth == 0
    assert lua.count("[") == lua.count("]")
    # Each line is a ``local NAME = {...}`` table or number, or one of the generated key functions.
    lines = [ln for ln in lua.splitlines() if ln.strip()]
    assert lines and all(re.fullmatch(r"local [A-Z_]+ = \{.*\}|local [A-Z_]+ = \d+|function K\.\w+\(a\) return .* end|"
                                      r"K\.[A-Z_]+ = \".*\"|local function celery_id\(.*\) return .* end",
                                      ln) for ln in lines), lines


@pytest.mark.unit
def test_lua_preamble_matches_tables():
    """Each allowed transition appears in the Lua table of its source state, and nothing else."""
    lua = lua_preamble()
    task_t = re.search(r"^local TASK_T = \{(.*)\}$", lua, re.M)[1]
    job_t = re.search(r"^local JOB_T = \{(.*)\}$", lua, re.M)[1]
    for body, allowed in ((task_t, TASK_ALLOWED), (job_t, JOB_ALLOWED)):
        rows = dict(re.findall(r'\["(\w+)"\]=\{([^{}]*)\}', body))
        assert set(rows) == set(allowed)
        for src, dsts in allowed.items():
            assert set(re.findall(r'\["(\w+)"\]=true', rows[src])) == dsts, src


@pytest.mark.unit
def test_markdown_lists_every_state():
    md = states.markdown()
    for name in TASK_NAMES + JOB_NAMES:
        assert f"| {name} |" in md


@pytest.mark.cluster
def test_every_table_the_readme_says_is_generated_is_what_its_generator_prints():
    """A README table that claims "Generated by `python -m MODULE`" is exactly that module's
    output (the States tables drifted from the schema once: Finish transitions and two effects
    were missing)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    claims = list(re.finditer(r"^Generated by `python -m ([\w.]+)`:\n\n", readme, re.M))
    assert claims, "README.md has no generated table any more: drop this test with it"
    for claim in claims:
        shown = []
        for line in readme[claim.end():].splitlines():
            if line and not line.startswith("|"):
                break
            shown.append(line)
        printed = subprocess.run([sys.executable, "-m", claim[1]], capture_output=True,
                                 text=True, check=True).stdout
        assert "\n".join(shown).strip() == printed.strip(), (
            f"README.md's table generated by {claim[1]} differs from its output: regenerate it")
