"""The CLI against a real cluster: job new/add/submit/view/list/listtasks/wait and task view,
``--json`` output, ``job wait`` exit codes, and bad input as one-line errors with exit codes
2 (bad usage, malformed id) and 1 (refused, unknown id, unreachable Redis)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support import running_cluster
from tests.support import hpcq
from scheduler import JobState

pytestmark = pytest.mark.cluster

ID_RE = re.compile(r"^[1-9]\d*(\.[1-9]\d*){0,2}$")


@pytest.fixture(scope="module")
def cluster(redis_server):
    with running_cluster(redis_server, workers=(("w1@cli", 2),)) as c:
        yield c


@pytest.fixture(scope="module")
def url(cluster):
    return cluster.redis_url


def run(url, *args, code=0, **kw):
    p = hpcq(*args, redis_url=url, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    return p


def run_json(url, *args, code=0):
    """``hpcq GROUP COMMAND --json ARGS...`` (before any ``--``, which starts the command)."""
    p = run(url, *args[:2], "--json", *args[2:], code=code)
    return json.loads(p.stdout)


def assert_one_line_error(p, code, exact=None, contains=None):
    err = p.stderr
    assert p.returncode == code, (p.returncode, p.stdout, err)
    assert err.startswith("error:"), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err and "Traceback" not in p.stdout
    if exact is not None:
        assert err == exact + "\n"
    if contains is not None:
        assert contains in err, err


def all_ids(doc):
    """Every value under an "id" key, anywhere in a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "id":
                yield v
            yield from all_ids(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from all_ids(v)


def test_new_add_submit_wait_view(url):
    job = run(url, "job", "new", "--name", "cli-job", "--priority", "AboveNormal").stdout.strip()
    assert re.fullmatch(r"[1-9]\d*", job), job
    assert run(url, "job", "add", job, "--name", "first", "--", "echo", "hello").stdout.strip() == f"{job}.1"
    assert run(url, "job", "add", job, "--sweep", "1-3", "--depends-on", "first", "--env", "X=y",
               "--", "echo sw-** $X").stdout.strip() == f"{job}.2"
    assert run_json(url, "job", "view", job)["state"] == "Configuring"
    assert run(url, "job", "submit", job).stdout.strip() == job
    p = run(url, "job", "wait", job, "--timeout", "60")
    assert "Finished" in p.stdout

    view = run_json(url, "job", "view", job)
    assert view["id"] == job and view["state"] == "Finished"
    assert view["name"] == "cli-job" and view["priority"] == "AboveNormal"

    tasks = run_json(url, "job", "listtasks", job)
    assert [t["id"] for t in tasks] == [f"{job}.1", f"{job}.2"]
    assert [t["state"] for t in tasks] == ["Finished", "Finished"]
    expanded = run_json(url, "job", "listtasks", job, "--expand")
    assert [t["id"] for t in expanded] == [f"{job}.1"] + [f"{job}.2.{i}" for i in (1, 2, 3)]

    t1 = run_json(url, "task", "view", f"{job}.1")
    assert t1["id"] == f"{job}.1" and t1["state"] == "Finished"
    assert t1["exit_code"] == 0 and t1["output"] == "hello\n" and t1["name"] == "first"
    inst = run_json(url, "task", "view", f"{job}.2.3")
    assert inst["id"] == f"{job}.2.3" and inst["output"] == "sw-03 y\n"
    assert inst["state"] == "Finished"

    listed = run_json(url, "job", "list", "--all")
    assert job in [j["id"] for j in listed]
    for doc in (view, tasks, expanded, t1, inst, listed):
        ids = list(all_ids(doc))
        assert ids and all(isinstance(i, str) and ID_RE.match(i) for i in ids), ids

    # human output works too
    assert f"{job}.2" in run(url, "job", "listtasks", job).stdout
    assert "hello" in run(url, "task", "view", f"{job}.1").stdout


def test_one_shot_submit_and_wait_exit_codes(url, cluster):
    ok = run(url, "job", "submit", "--name", "one-shot", "--", "echo one-shot").stdout.strip()
    assert re.fullmatch(r"[1-9]\d*", ok)
    assert run(url, "job", "wait", ok, "--timeout", "60", code=0)
    assert run_json(url, "task", "view", f"{ok}.1")["output"] == "one-shot\n"

    bad = run(url, "job", "submit", "--", "exit 5").stdout.strip()
    p = run(url, "job", "wait", bad, "--timeout", "60", code=1)
    assert "Failed" in p.stdout
    t = run_json(url, "task", "view", f"{bad}.1")
    assert t["state"] == "Failed" and t["exit_code"] == 5
    assert t["error_message"] == "The task exited with code 5."

    slow = run(url, "job", "submit", "--", "sleep 60").stdout.strip()
    t0 = time.monotonic()
    p = hpcq("job", "wait", slow, "--timeout", "1", redis_url=url)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert time.monotonic() - t0 < 15
    s = cluster.scheduler_api()
    s.cancel_job(int(slow), timeout=30)
    assert s.get_job(int(slow)).state == JobState.Canceled
    p = run(url, "job", "wait", slow, "--timeout", "10", code=1)  # Canceled: 1
    assert "Canceled" in p.stdout
    assert run_json(url, "job", "wait", slow, code=1)["state"] == "Canceled"


@pytest.mark.parametrize("args", [
    ("job", "view", "abc"),
    ("job", "view", "0"),
    ("job", "view", "-1"),
    ("job", "view", "1.1"),
    ("job", "wait", "x1"),
    ("job", "listtasks", "1.2"),
    ("job", "add", "1.1", "--", "true"),
    ("job", "cancel", "one"),
    ("task", "view", "1"),
    ("task", "view", "1.0"),
    ("task", "view", "0.1"),
    ("task", "view", "a.b"),
    ("task", "view", "1.-2"),
    ("task", "view", "1.2.3.4"),
])
def test_malformed_ids_exit_2(url, args):
    assert_one_line_error(hpcq(*args, redis_url=url), 2)


def test_unknown_ids_exit_1(url):
    assert_one_line_error(hpcq("task", "view", "9.9", redis_url=url), 1,
                          exact="error: task 9.9 does not exist")
    assert_one_line_error(hpcq("job", "view", "999", redis_url=url), 1,
                          exact="error: job 999 does not exist")
    # job wait: 2, as a bad id, since 1 means the job ended Failed or Canceled (issue 12)
    assert_one_line_error(hpcq("job", "wait", "999", redis_url=url), 2,
                          exact="error: job 999 does not exist")
    assert_one_line_error(hpcq("job", "submit", "999", redis_url=url), 1, contains="999")
    assert_one_line_error(hpcq("job", "add", "999", "--", "true", redis_url=url), 1, contains="999")
    assert_one_line_error(hpcq("job", "listtasks", "999", redis_url=url), 1, contains="999")
    assert_one_line_error(hpcq("task", "view", "9.9.9", redis_url=url), 1, contains="9.9.9")


def test_refused_operations_exit_1(url):
    job = run(url, "job", "submit", "--", "true").stdout.strip()
    run(url, "job", "wait", job, "--timeout", "60")
    assert_one_line_error(hpcq("job", "submit", job, redis_url=url), 1)
    assert_one_line_error(hpcq("job", "add", job, "--", "true", redis_url=url), 1)


@pytest.mark.parametrize("args", [
    ("job", "new", "--priority", "Bogus"),
    ("job", "new", "--runtime", "0"),
    ("job", "frobnicate"),
    ("job", "submit", "--sweep", "5-1", "--", "echo", "x"),
    ("job", "submit", "--sweep", "banana", "--", "echo", "x"),
    ("job", "submit", "--env", "NOEQUALS", "--", "echo", "x"),
    ("job", "list", "--state", "Sleeping"),
])
def test_bad_usage_exit_2(url, args):
    assert_one_line_error(hpcq(*args, redis_url=url), 2)


def test_add_without_command_exit_2(url):
    job = run(url, "job", "new").stdout.strip()
    assert_one_line_error(hpcq("job", "add", job, redis_url=url), 2)


def test_unreachable_redis_one_line_exit_1():
    for args in (("job", "list"), ("job", "view", "1"), ("task", "view", "1.1"),
                 ("job", "submit", "--", "true")):
        t0 = time.monotonic()
        p = hpcq(*args, redis_url="redis://127.0.0.1:1/0", timeout=60)
        assert_one_line_error(p, 1)
        assert "redis" in p.stderr.lower(), p.stderr
        assert time.monotonic() - t0 < 20


def test_json_ids_of_new_add_submit(url):
    new = run_json(url, "job", "new", "--name", "json-job")
    assert isinstance(new, dict) and isinstance(new["id"], str) and ID_RE.match(new["id"])
    job = new["id"]
    added = run_json(url, "job", "add", job, "--", "true")
    assert added["id"] == f"{job}.1"
    submitted = run_json(url, "job", "submit", job)
    assert submitted["id"] == job and submitted["state"] in ("Queued", "Running", "Finished")
    one = run_json(url, "job", "submit", "--", "true")
    assert isinstance(one["id"], str) and ID_RE.match(one["id"]) and one["id"] != job
    assert run_json(url, "job", "wait", one["id"], "--timeout", "60")["state"] == "Finished"
    assert run_json(url, "job", "wait", job, "--timeout", "60")["state"] == "Finished"


@pytest.mark.parametrize("args", [["job", "list"], ["node", "list"], ["job", "view", "1"],
                                  ["job", "submit", "--", "true"]])
def test_a_redis_that_holds_no_cluster_is_said_so(url, args):
    """A Redis no scheduler or worker ever ran against (the default URL naming another Redis,
    say) is not an empty cluster: every command says so, exit 1, and changes nothing there."""
    other = url.rsplit("/", 1)[0] + "/9"
    import redis
    r = redis.Redis.from_url(other)
    r.flushdb()
    p = run(other, *args, code=1)
    assert p.stdout == ""
    assert p.stderr == (f"error: Redis at {other} holds no hpcq cluster (no scheduler or worker "
                        "has run against it): set HPCQ_REDIS_URL to your cluster's URL (`hpcq up` "
                        "prints the export line) or start `hpcq scheduler` and `hpcq worker` on it\n")
    assert r.dbsize() == 0
    assert run(url, *args[:2], "--help").returncode == 0


def test_the_api_can_refuse_a_redis_that_holds_no_cluster(url):
    from scheduler import NoCluster, Scheduler
    other = url.rsplit("/", 1)[0] + "/9"
    with pytest.raises(NoCluster, match=r"holds no hpcq cluster"):
        Scheduler.connect(other, require_cluster=True)
    assert isinstance(Scheduler.connect(url, require_cluster=True).get_job_list(), list)
