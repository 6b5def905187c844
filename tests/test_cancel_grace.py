"""The grace period of a cancel, on every path that cancels a running task (issue 23, item 1):
the seed's "honors the grace period for the cancellation of the task".

For each path (a task, a sweep instance, a sweep master, a job, ``celery control terminate``,
``celery control revoke`` and Flower's terminate) two commands run at once and are canceled
without a grace of their own, so the cluster's setting (``GRACE``) applies:

* one cleans up on SIGTERM (``CLEANUP`` s, well inside the grace) and must finish its clean-up;
* one ignores SIGTERM and must live at least the grace after its SIGTERM, then be SIGKILLed.

The cluster polls Redis for cancels every 20 ms, so the poll usually sees a cancel before the
revoke's signal reaches the attempt: the order in which the worker once handed the stop ladder no
grace and SIGKILLed the command within a second.  The last test injects a bug into the
supervising code of a real worker: the command still gets its grace before the attempt is
recorded lost."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import redis

from tests.fixtures_cancel import RUNNING_MSG, Box, flower, submit, wait_state  # noqa: F401
from tests.support import hpcq, running_cluster, wait_until, with_db
from tests.test_celery_tools import celery

pytestmark = pytest.mark.cluster

#: The cluster's cancel grace period, and how long the command that cleans up takes to.
GRACE = 5.0
CLEANUP = 2.0
WORKER = "w1@hpcq-grace"


@pytest.fixture(scope="module")
def cl(redis_server):
    with running_cluster(redis_server, workers=((WORKER, 2),),
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(GRACE),
                              "HPCQ_CANCEL_POLL_INTERVAL": "0.02"}) as cluster:
        cluster.api = cluster.scheduler_api()
        yield cluster


def command(box: Box, kind: str) -> str:
    """A command that waits to be canceled.  ``kind``: ``clean`` (on SIGTERM it cleans up for
    CLEANUP s and exits 0), ``ignore`` (it goes on), or ``instance`` (instance 1 of a sweep
    cleans up, the others ignore).  Each writes ``started.K``, ``term.K`` and ``cleaned.K``."""
    pick = ('$(if [ "$HPCQ_INSTANCE" = 1 ]; then echo clean; else echo ignore; fi)'
            if kind == "instance" else kind)
    return box.script(f"""K={pick}
trap 'date +%s.%N > "$D/term.$K"; if [ "$K" = clean ]; then sleep {CLEANUP}; date +%s.%N > "$D/cleaned.$K"; exit 0; fi' TERM
date +%s.%N > "$D/started.$K"
while :; do sleep 0.05; done""", name=f"{kind}.sh")


def start(cl, box: Box, path: str) -> tuple[list[str], list[str]]:
    """Start the two commands for ``path``; returns their task ids (clean first, ignore second)
    and the ids the cancel is given."""
    if path in ("sweep master", "sweep instance"):
        job = submit(cl.api, (command(box, "instance"), {"sweep": (1, 2, 1)}))
        tids = [f"{job.id}.1.1", f"{job.id}.1.2"]
    else:
        job = submit(cl.api, command(box, "clean"), command(box, "ignore"))
        tids = [f"{job.id}.1", f"{job.id}.2"]
    for tid in tids:
        wait_state(cl.api, tid, "Running")
    wait_until(lambda: box.has("started.clean") and box.has("started.ignore"), 30,
               "both commands to start")
    if path == "sweep master":
        return tids, [f"{job.id}.1"]
    if path == "job":
        return tids, [str(job.id)]
    if path in ("celery terminate", "celery revoke", "flower"):
        return tids, [cl.api.get_task(t).celery_id for t in tids]
    return tids, tids


def cancel(cl, path: str, ids: list[str], request) -> None:
    if path == "job":
        cl.api.cancel_job(ids[0], wait=False)
    elif path == "celery terminate":
        res = celery(cl, "control", "terminate", "SIGTERM", *ids)
        assert res.returncode == 0, res.stdout + res.stderr
    elif path == "celery revoke":
        res = celery(cl, "control", "revoke", *ids)
        assert res.returncode == 0, res.stdout + res.stderr
    elif path == "flower":
        fl = request.getfixturevalue("flower")
        for cid in ids:
            status, body = fl.request("POST", f"/api/task/revoke/{cid}?terminate=true")
            assert status == 200, body
    else:
        for tid in ids:
            cl.api.cancel_task(tid, wait=False)


PATHS = ["task", "sweep instance", "sweep master", "job", "celery terminate", "celery revoke",
         "flower"]


@pytest.mark.parametrize("path", PATHS)
def test_a_cancel_gives_a_running_task_its_grace(cl, tmp_path, request, path):
    box = Box(tmp_path / "box")
    if path == "flower":
        request.getfixturevalue("flower")   # ready (its probe task run) before the slots fill
    (clean, ignore), ids = start(cl, box, path)
    cancel(cl, path, ids, request)
    ends = [wait_state(cl.api, t, ["Failed", "Finished", "Canceled"], timeout=GRACE + 30)
            for t in (clean, ignore)]
    log = cl.log(WORKER)[-3000:]
    for t in ends:
        assert t.state.value == "Failed", (t.id, t.state, t.error_message)
        assert t.error_message == RUNNING_MSG.format(""), t.error_message
    assert box.has("term.clean") and box.has("term.ignore"), "SIGTERM was not sent first"
    assert box.has("cleaned.clean"), f"the clean-up on SIGTERM was cut short:\n{log}"
    assert ends[0].exit_code == 0                 # its own exit, after cleaning up
    lived = ends[1].end_time - box.time_of("term.ignore")
    assert lived >= GRACE - 0.3, f"SIGKILLed {lived:.2f} s after SIGTERM, grace {GRACE}:\n{log}"
    assert ends[1].exit_code == -9
    assert box.alive() == []


def test_the_cluster_grace_is_the_schedulers_not_the_clients(cl, tmp_path):
    """HPC Pack's TaskCancelGracePeriod is one cluster setting: a cancel without ``--grace``
    records the leading scheduler's, the worker gives the command that, and the CLI says that,
    whatever the client's own environment holds."""
    box = Box(tmp_path / "box")
    job = submit(cl.api, command(box, "ignore"))
    tid = f"{job.id}.1"
    wait_state(cl.api, tid, "Running")
    wait_until(lambda: box.has("started.ignore"), 30, "the command to start")
    p = hpcq("task", "cancel", tid, redis_url=cl.redis_url, timeout=GRACE + 60,
             env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": "40"})
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout == f"{tid} Failed\n"
    assert re.search(rf"SIGKILL in [{int(GRACE) - 1}{int(GRACE)}] s", p.stderr), p.stderr
    assert cl.api.store.task(tid)["cancel_grace"] == f"{GRACE:g}"
    t = cl.api.get_task(tid)
    lived = t.end_time - box.time_of("term.ignore")
    assert GRACE - 0.3 <= lived < GRACE + 10, f"SIGKILLed {lived:.2f} s after SIGTERM"


# --- a bug in the supervising code ---------------------------------------------------------

#: Loaded by the worker's Python at start (``sitecustomize``): the attempt's check raises once it
#: sees the cancel, as a bug in the supervising code would.
INJECTED = '''
import os
if os.environ.get("HPCQ_TEST_INJECT_BUG") == "check":
    import worker.run as run
    _check = run.Attempt.check

    def check(self, signaled):
        stop = _check(self, signaled)
        if stop[0] == "cancel":
            raise RuntimeError("injected bug in the supervising code")
        return stop

    run.Attempt.check = check
'''


@pytest.fixture(scope="module")
def buggy(redis_server, tmp_path_factory):
    site = tmp_path_factory.mktemp("buggy-site")
    (Path(site) / "sitecustomize.py").write_text(INJECTED)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # its own database: the module's other cluster (and its worker) is still running
    url = with_db(redis_server, 4)
    redis.Redis.from_url(url).flushdb()
    with running_cluster(url, workers=(("w1@hpcq-buggy", 1),), flush=False,
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(GRACE),
                              "HPCQ_TEST_INJECT_BUG": "check", "PYTHONPATH": path}) as cluster:
        cluster.api = cluster.scheduler_api()
        yield cluster


@pytest.mark.parametrize("kind", ["clean", "ignore"])
def test_a_bug_in_supervision_still_gives_the_command_its_grace(buggy, tmp_path, kind):
    box = Box(tmp_path / "box")
    job = submit(buggy.api, command(box, kind))
    tid = f"{job.id}.1"
    wait_state(buggy.api, tid, "Running")
    wait_until(lambda: box.has(f"started.{kind}"), 30, "the command to start")
    t0 = time.time()
    buggy.api.cancel_task(tid, wait=False)
    t = wait_state(buggy.api, tid, ["Failed", "Finished", "Canceled"], timeout=GRACE + 30)
    log = buggy.log("w1@hpcq-buggy")
    assert "injected bug in the supervising code" in log, "the bug was not injected"
    assert box.has(f"term.{kind}"), "SIGTERM was not sent first"
    if kind == "clean":
        assert box.has("cleaned.clean"), f"the clean-up was cut short:\n{log[-3000:]}"
    else:
        lived = t.end_time - box.time_of("term.ignore")
        assert lived >= GRACE - 0.3, f"SIGKILLed {lived:.2f} s after SIGTERM:\n{log[-3000:]}"
    assert t.state.value == "Failed"
    assert t.end_time >= t0
    assert box.alive() == []
