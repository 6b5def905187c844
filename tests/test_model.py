"""Job and task specs: validation before anything reaches Redis, priorities, cancel messages and
name-based dependencies."""

from __future__ import annotations

import json
import os

import pytest

from scheduler.errors import InvalidInput
from scheduler.api.model import (MAX_CANCEL_MESSAGE, JobSpec, Msg, Priority, TaskSpec, check_cancel_message,
                             resolve_dependencies)

pytestmark = pytest.mark.unit


# -- Priority ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("Lowest", Priority.Lowest), ("lowest", Priority.Lowest), ("BELOWNORMAL", Priority.BelowNormal),
    ("normal", Priority.Normal), ("AboveNormal", Priority.AboveNormal), ("highest", Priority.Highest),
    (0, Priority.Lowest), (1, Priority.BelowNormal), (2, Priority.Normal), (3, Priority.AboveNormal),
    (4, Priority.Highest), (Priority.Highest, Priority.Highest),
])
def test_priority_parse(value, expected):
    assert Priority.parse(value) is expected


def test_priority_order():
    assert Priority.Lowest < Priority.BelowNormal < Priority.Normal < Priority.AboveNormal < Priority.Highest


@pytest.mark.parametrize("value", ["", "urgent", "high", 5, -1, None, True, 2.5, "Normal "])
def test_priority_parse_bad(value):
    with pytest.raises(InvalidInput):
        Priority.parse(value)


# -- TaskSpec ---------------------------------------------------------------------------------

def test_task_spec_defaults():
    t = TaskSpec("echo hi")
    assert t.command == "echo hi"
    assert t.name == "" and t.env == {} and t.depends_on == []
    assert t.is_rerunnable is True and t.sweep is None and t.runtime is None
    assert t.instances == 0


@pytest.mark.parametrize("command", ["", "   ", "\n", None, 3])
def test_task_spec_empty_command(command):
    with pytest.raises(InvalidInput):
        TaskSpec(command)


@pytest.mark.parametrize("bad", [(1, 10, 0), (10, 1, 1), (1, 1_000_001, 1), (1,), (1, 2, 3, 4), ("a", 2, 1), 5])
def test_task_spec_bad_sweep(bad):
    with pytest.raises(InvalidInput):
        TaskSpec("echo *", sweep=bad)


def test_task_spec_sweep():
    t = TaskSpec("echo *", sweep=[1, 10, 3])
    assert t.sweep == (1, 10, 3) and t.instances == 4
    t = TaskSpec("echo *", sweep=("1", "5"))
    assert t.sweep == (1, 5, 1) and t.instances == 5
    rec = TaskSpec("echo *", sweep=(2, 6, 2)).to_record()
    assert (rec["start"], rec["end"], rec["step"], rec["total"]) == ("2", "6", "2", "3")


@pytest.mark.parametrize("runtime", [0, -1, "x", "0"])
def test_task_spec_bad_runtime(runtime):
    with pytest.raises(InvalidInput):
        TaskSpec("echo", runtime=runtime)


def test_task_spec_runtime():
    assert TaskSpec("echo", runtime=1).runtime == 1
    assert TaskSpec("echo", runtime="30").runtime == 30


@pytest.mark.parametrize("name", ["a,b", ",", "x,"])
def test_task_spec_name_with_comma(name):
    with pytest.raises(InvalidInput):
        TaskSpec("echo", name=name)


def test_task_spec_name_too_long():
    assert TaskSpec("echo", name="n" * 80).name == "n" * 80
    with pytest.raises(InvalidInput):
        TaskSpec("echo", name="n" * 81)


def test_task_spec_relative_work_dir_becomes_absolute():
    t = TaskSpec("echo", work_dir="sub/dir")
    assert os.path.isabs(t.work_dir)
    assert t.work_dir == os.path.join(os.getcwd(), "sub", "dir")
    assert TaskSpec("echo", work_dir="/tmp/x").work_dir == "/tmp/x"
    # no work_dir: the directory the task is added from (issue 12), as Slurm does
    assert TaskSpec("echo").work_dir == os.getcwd()


def test_task_spec_env():
    t = TaskSpec("echo", env={"A": 1, "B": "two"})
    assert t.env == {"A": "1", "B": "two"}
    for bad in ({"": "x"}, {"A=B": "x"}):
        with pytest.raises(InvalidInput):
            TaskSpec("echo", env=bad)


def test_task_spec_depends_on():
    assert TaskSpec("echo", depends_on="a,b,,c").depends_on == ["a", "b", "c"]
    assert TaskSpec("echo", depends_on=[" a ", "", "b"]).depends_on == ["a", "b"]
    assert TaskSpec("echo", depends_on=None).depends_on == []


def test_task_spec_record():
    rec = TaskSpec("echo hi", name="n", env={"A": "1"}, depends_on=["x", "y"], runtime=5,
                   is_rerunnable=False, stdout="/tmp/o").to_record()
    assert rec["command"] == "echo hi" and rec["name"] == "n"
    assert json.loads(rec["env"]) == {"A": "1"}
    assert rec["depends_on"] == "x,y" and rec["runtime"] == "5" and rec["rerunnable"] == "0"
    assert rec["stdout"] == "/tmp/o"
    assert "stdin" not in rec and rec["work_dir"] == os.getcwd() and "start" not in rec
    assert all(isinstance(v, str) for v in rec.values())


# -- JobSpec ----------------------------------------------------------------------------------

def test_job_spec():
    j = JobSpec(name="j", priority="highest", fail_on_task_failure=1, runtime="60")
    assert j.priority is Priority.Highest and j.fail_on_task_failure is True and j.runtime == 60
    rec = j.to_record()
    assert rec["priority"] == "Highest" and rec["fail_on_task_failure"] == "1" and rec["runtime"] == "60"
    assert JobSpec().priority is Priority.Normal
    for bad in (dict(priority="urgent"), dict(runtime=0), dict(name="n" * 81)):
        with pytest.raises(InvalidInput):
            JobSpec(**bad)


# -- cancel message ---------------------------------------------------------------------------

def test_cancel_message_limit():
    assert MAX_CANCEL_MESSAGE == 128
    assert check_cancel_message("m" * 128) == "m" * 128
    assert check_cancel_message(None) == ""
    assert check_cancel_message("") == ""
    with pytest.raises(InvalidInput) as exc:
        check_cancel_message("m" * 129)
    assert str(exc.value) == "Cancel message should not contain more than 128 characters."
    assert Msg.message_too_long == "Cancel message should not contain more than 128 characters."


def test_cancel_message_counts_characters_not_bytes():
    assert check_cancel_message("é" * 128) == "é" * 128
    with pytest.raises(InvalidInput):
        check_cancel_message("é" * 129)


# -- dependencies -----------------------------------------------------------------------------

def _tasks(*pairs):
    return [TaskSpec("echo", name=name, depends_on=deps) for name, deps in pairs]


def test_resolve_dependencies_names_to_numbers():
    tasks = _tasks(("a", []), ("b", ["a"]), ("c", ["a", "b"]), ("", []))
    assert resolve_dependencies(tasks) == [[], [1], [1, 2], []]


def test_resolve_dependencies_shared_name():
    """One name may stand for several tasks; depending on it waits for all of them."""
    tasks = _tasks(("prep", []), ("prep", []), ("work", ["prep"]), ("prep", []))
    assert resolve_dependencies(tasks) == [[], [], [1, 2, 4], []]


def test_resolve_dependencies_duplicates_collapse():
    tasks = _tasks(("a", []), ("b", ["a", "a"]))
    assert resolve_dependencies(tasks) == [[], [1]]


def test_resolve_dependencies_unknown_name():
    with pytest.raises(InvalidInput) as exc:
        resolve_dependencies(_tasks(("a", []), ("b", ["nope"])))
    assert "nope" in str(exc.value)


def test_resolve_dependencies_self():
    with pytest.raises(InvalidInput):
        resolve_dependencies(_tasks(("a", ["a"])))


def test_resolve_dependencies_self_through_shared_name():
    with pytest.raises(InvalidInput):
        resolve_dependencies(_tasks(("a", []), ("a", ["a"])))


@pytest.mark.parametrize("pairs", [
    (("a", ["b"]), ("b", ["a"])),
    (("a", ["c"]), ("b", ["a"]), ("c", ["b"])),
    (("x", []), ("a", ["x", "c"]), ("b", ["a"]), ("c", ["b"]), ("d", ["c"])),
])
def test_resolve_dependencies_cycle(pairs):
    with pytest.raises(InvalidInput) as exc:
        resolve_dependencies(_tasks(*pairs))
    assert "cycle" in str(exc.value)


def test_resolve_dependencies_diamond_is_not_a_cycle():
    tasks = _tasks(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))
    assert resolve_dependencies(tasks) == [[], [1], [1], [2, 3]]


def test_resolve_dependencies_long_chain():
    n = 5000
    tasks = [TaskSpec("echo", name=f"t{i}", depends_on=[f"t{i - 1}"] if i > 1 else []) for i in range(1, n + 1)]
    deps = resolve_dependencies(tasks)
    assert deps[0] == [] and deps[-1] == [n - 1]


def test_resolve_dependencies_empty():
    assert resolve_dependencies([]) == []
