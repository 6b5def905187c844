"""One-call submission (issue 11): ``Scheduler.submit(tasks, name=..., ...)`` creates a job,
adds its tasks and submits it; ``hpcq job submit -- CMD`` is that call.  Everything is checked
before the first write, so a refused call leaves Redis exactly as it was (every key's DUMP); a
failure after the job was created cancels it.  No workers run here: submitted tasks stay Queued."""

from __future__ import annotations

import inspect

import pytest

from tests.support import as_cluster, hpcq
from scheduler import InvalidInput, JobState, NotFound, Scheduler, TaskState
from scheduler import cli as cli_module
from scheduler.api import client
from scheduler.cli import jobs as cli_jobs
from scheduler.api.model import TaskSpec
from scheduler.core.store import Store


@pytest.fixture
def s(redis_url, r):
    as_cluster(r)              # a cluster whose daemons are down: the CLI's submit goes in
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

@pytest.mark.store
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


@pytest.mark.store
def test_api_submit_one_task(s):
    job = s.submit(TaskSpec(command="echo hi"))
    assert job.state == JobState.Queued and states(job) == ["Queued"]
    assert job.get_task(1).command == "echo hi"
    assert s.submit({"command": "echo hi"}).id == job.id + 1


@pytest.mark.cluster
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


@pytest.mark.store
@pytest.mark.parametrize("tasks,kw,words", BAD_CALLS)
def test_api_refused_submit_writes_nothing(r, s, before, tasks, kw, words):
    with pytest.raises(InvalidInput) as exc:
        s.submit(tasks, **kw)
    assert words in str(exc.value)
    assert snapshot(r) == before


@pytest.mark.store
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


@pytest.mark.cluster
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


# --- one atomic step: a failed submit leaves nothing ------------------------------------------

@pytest.mark.store
def test_submit_is_one_step(r, s, monkeypatch):
    """The job is created, filled and submitted by one script (new_job.lua): none of the
    step-by-step calls is made, so nothing can fail between them."""
    def refuse(*a, **kw):
        raise AssertionError("a step-by-step call was made")
    for name in ("create_job", "add_task", "submit"):
        monkeypatch.setattr(Store, name, refuse)
    job = s.submit([{"command": "first", "name": "a"}, {"command": "second", "depends_on": ["a"]}],
                   name="whole")
    assert job.state == JobState.Queued and job.task_count == 2
    assert states(job) == ["Queued", "Queued"]


@pytest.mark.store
def test_a_refused_submit_creates_no_job(r, s):
    """The script refuses (a parent job that does not exist) before its first write: no job,
    not even a job id taken."""
    with pytest.raises(NotFound, match=r"^parent job 42 does not exist$"):
        s.submit([{"command": "x"}], depends_on_job=[42])
    assert s.get_job_list() == [] and r.get("hpcq:job:seq") is None


@pytest.mark.store
def test_a_key_makes_a_retried_submit_return_the_same_job(r, s):
    first = s.submit({"command": "x"}, key="run-7")
    again = s.submit({"command": "x"}, key="run-7")
    assert again.id == first.id and len(s.get_job_list(state="Queued")) == 1
    # submit_job with a key already used returns that job and leaves the new one as it is
    other = s.create_job(name="o")
    other.add_task("true")
    assert s.submit_job(other, key="run-7").id == first.id
    assert other.refresh().state == JobState.Configuring
    assert s.submit_job(other, key="run-8").id == other.id and other.refresh().state == JobState.Queued


@pytest.mark.store
def test_cli_prints_a_refused_submit_on_one_line(redis_url, s, capsys):
    """The CLI in process: the script's refusal is one line, exit 1, and no job is left."""
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["job", "submit", "--redis", redis_url, "--depends-on-job", "42", "--", "true"])
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "error: parent job 42 does not exist\n"
    assert s.get_job_list() == []


# --- one place for each thing -----------------------------------------------------------------

@pytest.mark.unit
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


@pytest.mark.unit
def test_cli_one_shot_submit_is_the_api_call():
    source = inspect.getsource(cli_jobs.job_submit.callback)
    assert ".submit(spec," in source
    for gone in ("create_job", "add_spec", "cancel_job", "resolve_dependencies", "runtime >"):
        assert gone not in source
