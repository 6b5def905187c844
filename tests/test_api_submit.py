"""One-call submission (issue 11): ``Scheduler.submit(tasks, name=..., ...)`` creates a job,
adds its tasks and submits it; ``hpcq job submit -- CMD`` is that call.  Everything is checked
before the first write, so a refused call leaves Redis exactly as it was (every key's DUMP); a
failure after the job was created cancels it.  No workers run here: submitted tasks stay Queued."""

from __future__ import annotations

import inspect

import pytest

from tests.support import hpcq
from scheduler import InvalidInput, InvalidState, JobState, RedisUnavailable, Scheduler, TaskState
from scheduler import cli as cli_module
from scheduler.api import client
from scheduler.cli import jobs as cli_jobs
from scheduler.api.model import Msg, TaskSpec
from scheduler.core.store import Store


@pytest.fixture
def s(redis_url):
    return Scheduler.connect(redis_url)


@pytest.fixture
def before(r, s):
    """Some state to leave alone (a submitted job and one in Configuring), then its snapshot."""
    s.submit({"command": "true", "name": "old"}, name="old")
    s.create_job(name="configuring").add_task(command="true")
    return snapshot(r)


def snapshot(r) -> dict:
    """Every key with its serialized value: equal snapshots mean nothing was written."""
    return {k: r.dump(k) for k in r.keys("*")}


def job_ids(r) -> list[int]:
    return [int(j) for j in r.zrange("hpcq:jobs", 0, -1)]


def states(job) -> list[str]:
    return [t.state.value for t in job.get_task_list()]


# --- valid calls ------------------------------------------------------------------------------

def test_api_submit_creates_one_job_with_its_tasks_queued(r, s, before):
    ids, seq = job_ids(r), int(r.get("hpcq:job:seq"))
    job = s.submit([TaskSpec(command="echo prep", name="prep"),
                    {"command": "echo frame *", "sweep": (1, 3, 1), "depends_on": ["prep"],
                     "runtime": 30},
                    {"command": "echo last", "name": "last", "depends_on": "prep"}],
                   name="one-call", priority="AboveNormal", fail_on_task_failure=True, runtime=60)
    assert job_ids(r) == ids + [job.id] and int(r.get("hpcq:job:seq")) == seq + 1
    assert job.state == JobState.Queued
    assert (job.name, job.priority.name, job.fail_on_task_failure, job.runtime) == \
        ("one-call", "AboveNormal", True, 60)
    assert job.task_count == 3 and states(job) == ["Queued"] * 3
    t2 = job.get_task(2)
    assert t2.is_sweep and t2.instances == 3 and t2.runtime == 30 and t2.depends_on == ["prep"]
    # tasks 2 and 3 wait for task 1 (dependencies resolved by name, before the first write)
    assert r.smembers(f"hpcq:job:{job.id}:waiting") == {"2", "3"}
    assert r.smembers(f"hpcq:task:{job.id}.1:rdeps") == {"2", "3"}


def test_api_submit_one_task(s):
    job = s.submit(TaskSpec(command="echo hi"))
    assert job.state == JobState.Queued and states(job) == ["Queued"]
    assert job.get_task(1).command == "echo hi"
    assert s.submit({"command": "echo hi"}).id == job.id + 1


def test_cli_one_shot_submit(r, redis_url, before):
    ids = job_ids(r)
    p = hpcq("job", "submit", "--name", "cli", "--runtime", "60", "--task-runtime", "30",
             "--env", "A=b", "--", "echo", "hello", redis_url=redis_url)
    assert p.returncode == 0 and p.stderr == "", p
    job = Scheduler.connect(redis_url).get_job(p.stdout.strip())
    assert job_ids(r) == ids + [job.id]
    assert job.state == JobState.Queued and job.name == "cli" and job.runtime == 60
    (task,) = job.get_task_list()
    assert (task.state, task.name, task.command, task.runtime, task.env) == \
        (TaskState.Queued, "cli", "echo hello", 30, {"A": "b"})


# --- refused calls: nothing written -----------------------------------------------------------

BAD_CALLS = [
    # (tasks, job keywords, words the error has)
    ([{"command": "a", "name": "a"}, {"command": "b", "depends_on": ["nosuch"]}], {},
     "task 2 depends on 'nosuch', which no task of the job is named"),
    ([{"command": "a", "name": "a", "depends_on": "b"}, {"command": "b", "name": "b", "depends_on": "a"}],
     {}, "cycle"),
    ({"command": "a", "name": "a", "depends_on": "a"}, {}, "task 1 depends on itself"),
    ([{"command": "a"}, {"command": "b", "runtime": 61}], {"runtime": 60},
     "task 2's runtime (61 s) is greater than the job's runtime (60 s)"),
    ([{"command": "ok"}, {"command": "echo \x00"}], {}, "task 2: the command contains a NUL byte"),
    ({"command": "echo", "env": {"X": "a\x00b"}}, {}, "NUL byte"),
    ([{"command": "ok"}, {"command": "ok", "stdout": "/tmp/\x00"}], {}, "task 2: stdout contains a NUL byte"),
    ([{"command": "ok"}, {"command": "x", "bogus": 1}], {}, "task 2: unknown task field(s) bogus"),
    ([{"command": "ok"}, {"name": "no command"}], {}, "task 2: a task needs a non-empty command"),
    ([{"command": "ok"}, "echo"], {}, "task 2: a task must be a TaskSpec"),
    ([], {}, "a job needs at least one task"),
    ("echo hi", {}, "tasks must be a TaskSpec"),
    ({"command": "ok"}, {"priority": "Bogus"}, "invalid priority 'Bogus'"),
    ({"command": "ok"}, {"name": "n\x00"}, "the job name contains a NUL byte"),
    ({"command": "ok"}, {"runtime": 0}, "runtime must be >= 1"),
]


@pytest.mark.parametrize("tasks,kw,words", BAD_CALLS)
def test_api_refused_submit_writes_nothing(r, s, before, tasks, kw, words):
    with pytest.raises(InvalidInput) as exc:
        s.submit(tasks, **kw)
    assert words in str(exc.value)
    assert snapshot(r) == before


def test_api_checks_a_taskspec_changed_after_it_was_made(r, s, before):
    spec = TaskSpec(command="echo ok")
    spec.command = "echo \x00"
    with pytest.raises(InvalidInput, match="NUL byte"):
        s.submit([TaskSpec(command="fine"), spec])
    assert snapshot(r) == before


def assert_one_line_usage_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and p.stderr.endswith("\n"), p.stderr
    assert "Traceback" not in p.stderr
    for word in words:
        assert word in lines[0], p.stderr


@pytest.mark.parametrize("args,words", [
    (["--depends-on", "nosuch", "--", "echo"], ["task 1 depends on 'nosuch'"]),
    (["--name", "a", "--depends-on", "a", "--", "echo"], ["task 1 depends on itself"]),
    (["--runtime", "10", "--task-runtime", "20", "--", "echo"],
     ["task 1's runtime (20 s) is greater than the job's runtime (10 s)"]),
    # argv cannot carry a NUL byte; a byte that is not UTF-8 is refused the same way
    (["--", "cat", "\udcff"], ["the command contains U+DCFF"]),
    (["--priority", "Bogus", "--", "echo"], ["invalid priority 'Bogus'"]),
])
def test_cli_refused_one_shot_submit_writes_nothing(r, redis_url, before, args, words):
    assert_one_line_usage_error(hpcq("job", "submit", *args, redis_url=redis_url), *words)
    assert snapshot(r) == before


# --- failures after the job was created: it is canceled ---------------------------------------

def test_failure_after_create_cancels_the_job(r, s, monkeypatch):
    real = Store.add_task

    def add_task(self, job_id, record):
        if record["command"] == "second":
            raise RedisUnavailable("cannot reach Redis: connection reset")
        return real(self, job_id, record)
    monkeypatch.setattr(Store, "add_task", add_task)
    with pytest.raises(RedisUnavailable):
        s.submit([{"command": "first"}, {"command": "second"}], name="half")
    (job,) = s.get_job_list()
    assert job.state == JobState.Canceled and job.name == "half"
    assert job.error_message == "submit failed: cannot reach Redis: connection reset"
    (task,) = job.get_task_list()
    assert task.state == TaskState.Canceled
    assert task.error_message == Msg.canceled_by_user.format(job.error_message)
    assert r.zcard("hpcq:queue") == 0


def test_job_changed_by_another_client_meanwhile_is_canceled(redis_url, s, monkeypatch):
    """Another client adds a task to the new job before it is submitted: the submit script
    refuses, and the job (with the intruder's task) ends Canceled, never Queued."""
    other = Scheduler.connect(redis_url)
    real = Store.submit

    def submit(self, job_id, band, deps):
        other.get_job(job_id).add_task(command="intruder")
        return real(self, job_id, band, deps)
    monkeypatch.setattr(Store, "submit", submit)
    with pytest.raises(InvalidState, match="changed while it was being submitted"):
        s.submit([{"command": "mine"}])
    (job,) = s.get_job_list()
    assert job.state == JobState.Canceled
    assert states(job) == ["Canceled", "Canceled"]


def test_a_cancel_that_fails_too_is_named_in_the_error(s, monkeypatch):
    def submit(self, job_id, band, deps):
        raise RedisUnavailable("cannot reach Redis: gone")

    def cancel_job(self, *a, **kw):
        raise RedisUnavailable("cannot reach Redis: still gone")
    monkeypatch.setattr(Store, "submit", submit)
    monkeypatch.setattr(Store, "cancel_job", cancel_job)
    with pytest.raises(RedisUnavailable) as exc:
        s.submit({"command": "x"})
    (job,) = s.get_job_list()
    assert exc.value.__notes__ == [
        f"job {job.id} was created but could not be canceled: cannot reach Redis: still gone"]


def test_cli_prints_the_api_error_of_a_failed_submit_on_one_line(redis_url, s, monkeypatch, capsys):
    """The CLI in process (to make the submit step fail): one line, the API's note included."""
    def submit(self, job_id, band, deps):
        raise InvalidState("refused for the test")

    def cancel_job(self, *a, **kw):
        raise InvalidInput("cancel refused for the test")
    monkeypatch.setattr(Store, "submit", submit)
    monkeypatch.setattr(Store, "cancel_job", cancel_job)
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["job", "submit", "--redis", redis_url, "--", "true"])
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    (job,) = s.get_job_list()
    assert out == ""
    assert err == (f"error: refused for the test; job {job.id} was created but could not be "
                   "canceled: cancel refused for the test\n")


# --- one place for each thing -----------------------------------------------------------------

def test_cancel_texts_are_formatted_in_one_place():
    import pathlib

    from scheduler.core import schema
    assert schema.cancel_texts("m") == ("Canceled by user. Message: m",
                                        "The task has been canceled by the user during execution. Message: m")
    root = pathlib.Path(schema.__file__).parents[2]
    sources = {p: p.read_text() for d in ("scheduler", "worker") for p in (root / d).rglob("*.py")}
    for text in ("Msg.canceled_by_user.format(", "Msg.canceled_during_execution.format("):
        assert [p.name for p, src in sources.items() if text in src] == ["schema.py"], text
    for module in (client, cli_module, cli_jobs):
        assert "Msg.canceled" not in inspect.getsource(module)


def test_cli_one_shot_submit_is_the_api_call():
    source = inspect.getsource(cli_jobs.job_submit.callback)
    assert ".submit(spec," in source
    for gone in ("create_job", "add_spec", "cancel_job", "resolve_dependencies", "runtime >"):
        assert gone not in source
