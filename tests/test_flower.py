"""``hpcq flower`` on the loopback, ``hpcq up --flower``, and what Flower is given to show.

* Without credentials Flower binds 127.0.0.1 only and a public ``--address`` is refused with
  one line; with ``FLOWER_BASIC_AUTH`` it needs them (401 without, 200 with), and neither the
  credentials nor the Redis password is on its argv or in its log.
* ``hpcq up --flower`` prints Flower's URL, and Flower answers there.
* The Celery ``argsrepr`` of an attempt: the hpcq id and the command (a sweep instance's ``*``
  substituted), cut to 200 characters without splitting a character, the password masked.
  (Flower showing it, and each worker's slots, is checked through Flower's API in
  tests/test_compose.py.)
* An attempt whose worker was killed whole (main and pool processes) is shown FAILURE with
  hpcq's reason, not STARTED forever: when the scheduler declares the worker lost, and when the
  worker's next life ends what its previous life held (scheduler/celery_events.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import psutil
import pytest

from scheduler import Scheduler
from scheduler.core import keys
from scheduler.display import COMMAND_CHARS, READ_BYTES, Display, attempt_repr
from tests.support import (RedisServer, attempt_processes, free_port, hpcq, running_cluster,
                           wait_until)

pytest.importorskip("flower")


def get(port: int, path: str = "/", auth: str | None = None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.cluster
@pytest.mark.parametrize("args, message", [
    (["--address", "0.0.0.0"], "refusing to serve Flower on 0.0.0.0 without --basic-auth"),
    (["--address", "10.1.2.3"], "refusing to serve Flower on 10.1.2.3 without --basic-auth"),
    (["--basic-auth", "nopassword"], "invalid --basic-auth: expected USER:PASSWORD"),
    (["--port", "0"], "Invalid value for"),
])
def test_bad_flower_arguments_are_one_line(args, message, redis_url):
    res = hpcq("flower", *args, redis_url=redis_url, env={"FLOWER_BASIC_AUTH": ""})
    assert res.returncode == 2, res
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


@pytest.mark.cluster
def test_flower_without_credentials_binds_the_loopback_only(procs, redis_url):
    port = free_port()
    proc = procs.start([sys.executable, "-m", "scheduler.cli", "flower", "--port", port],
                       env={"HPCQ_REDIS_URL": redis_url, "FLOWER_BASIC_AUTH": ""})
    wait_until(lambda: get(port) == 200 or (proc.running() is False and proc.log()), 20,
               "Flower to answer")
    assert get(port) == 200, proc.log()
    assert get(port, "/api/workers") == 401        # Flower's API needs auth (or an opt-in)
    listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    proc.stop()
    assert proc.returncode == 0, proc.log()


@pytest.mark.cluster
def test_flower_with_credentials_keeps_every_secret_off_its_argv(procs, tmp_path):
    password = "s3cret-redis-pw"
    auth = "admin:s3cret-flower-pw"
    server = RedisServer(tmp_path / "redis", password=password).start()
    try:
        secret = tmp_path / "redis_password"
        secret.write_text(password + "\n")
        port = free_port()
        proc = procs.start([sys.executable, "-m", "scheduler.cli", "flower", "--port", port,
                            "--address", "0.0.0.0"],
                           env={"HPCQ_REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
                                "HPCQ_REDIS_PASSWORD_FILE": str(secret), "FLOWER_BASIC_AUTH": auth})
        wait_until(lambda: get(port, "/", auth) == 200, 20, "Flower to answer")
        assert get(port) == 401 and get(port, "/", "admin:wrong") == 401
        assert get(port, "/api/workers", auth) == 200
        argv = " ".join(psutil.Process(proc.pid).cmdline())
        assert "s3cret" not in argv, argv
        proc.stop()
        assert "s3cret" not in proc.log(), proc.log()
    finally:
        server.stop()


@pytest.mark.cluster
def test_up_with_flower_prints_its_url(tmp_path):
    port = free_port()
    env = dict(os.environ, HPCQ_STATE_DIR=str(tmp_path), FLOWER_BASIC_AUTH="")
    env.pop("HPCQ_REDIS_URL", None)
    up = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "up", "--workers", "1",
                           "--concurrency", "1", "--flower-port", str(port)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(up.stderr), daemon=True).start()
    try:
        url = wait_until(lambda: next((m[1] for line in list(err)
                                       if (m := re.search(r"Flower: (http://\S+)", line))), None)
                         or (up.poll() is not None and "exited"), 30, "the Flower line")
        assert url == f"http://127.0.0.1:{port}", "".join(err)
        wait_until(lambda: get(port) == 200, 20, "Flower to answer")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, "".join(err)
    assert get(port) == 0     # stopped with the rest


@pytest.mark.store
def test_argsrepr_names_the_task_and_its_command(redis_url):
    s = Scheduler.connect(redis_url)
    password = "pw-in-a-command"
    job = s.create_job(name="shown")
    job.add_task(command="echo frame '***' " + "é" * 500, sweep=(1, 3, 1))
    job.add_task(command=f"redis-cli -a {password} ping")
    s.submit_job(job)
    s.store.heartbeat("w1", 8, keys.worker_queue("w1"), {"pid": 1}, [], 1000, 3)
    # the dispatch step returns the heads of the commands it handed out, one per spec record
    got, heads = s.store.dispatch_shown(["w1"], 10, 1000, READ_BYTES)
    assert sorted(a[1] for a in got) == [f"{job.id}.1.{i}" for i in (1, 2, 3)] + [f"{job.id}.2"]
    assert sorted(heads) == [f"{job.id}.1", f"{job.id}.2"]
    assert heads[f"{job.id}.1"][1] == str(len(("echo frame '***' " + "é" * 500).encode()))
    display = Display(secrets=[password])
    shown = display.commands([f"{job.id}.1.2", f"{job.id}.2"], heads)
    head = shown[f"{job.id}.1.2"]
    assert head.startswith("echo frame '002' é") and head.endswith(" bytes)")
    assert len(head.partition("...")[0]) == COMMAND_CHARS and "\ufffd" not in head
    assert shown[f"{job.id}.2"] == "redis-cli -a *** ping"
    assert attempt_repr("7.1", "hostname") == "['7.1', 'hostname']"
    attempts = [(f"{job.id}.2", "1", "hpcq-x")]
    assert display.argsreprs(attempts, heads) == {
        f"{job.id}.2": repr([f"{job.id}.2", "redis-cli -a *** ping"])}


AUTH = "admin:flower-test-pw"


def api(port: int, path: str):
    """Flower's HTTP API as JSON (None while it does not answer 200)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):      # HTTPError (404: a task Flower has not seen) included
        return None


def flower_watching(procs, cluster) -> int:
    """Flower on ``cluster``, its port once it has seen a task end (its event capture is on)."""
    port = free_port()
    procs.start([sys.executable, "-m", "scheduler.cli", "flower", "--port", port],
                env={"HPCQ_REDIS_URL": cluster.redis_url, "FLOWER_BASIC_AUTH": AUTH})
    wait_until(lambda: get(port, "/", AUTH) == 200, 30, "Flower to answer")
    s = cluster.scheduler_api()
    probe = s.create_job(name="probe")
    task = probe.add_task(command="true")
    s.submit_job(probe)

    def seen():
        cid = s.get_task(task.id).record.get("celery_id")
        info = cid and api(port, f"/api/task/info/{cid}")
        if info and info.get("state") == "SUCCESS":
            return True
        if s.get_job(probe.id).state.value == "Finished":
            s.requeue_job(probe.id)    # ran before Flower was listening: again
        return False
    wait_until(seen, 30, "Flower to show a finished task", interval=0.5)
    return port


def started_in_flower(s, port: int, job, command: str):
    """A non-rerunnable task of ``job`` running, and Flower showing its attempt STARTED."""
    task = job.add_task(command=command, is_rerunnable=False)
    s.submit_job(job)
    t = wait_until(lambda: s.get_task(task.id).state.value == "Running" and s.get_task(task.id),
                   30, f"task {task.id} running")
    cid = t.record["celery_id"]
    wait_until(lambda: (api(port, f"/api/task/info/{cid}") or {}).get("state") == "STARTED", 20,
               f"Flower to show {cid} STARTED")
    wait_until(lambda: attempt_processes(cid), 10, "the command to run")
    return t, cid


def assert_failed_in_flower(port: int, cid: str, worker: str, reason: str) -> dict:
    last: dict = {}

    def ended():
        last.update(api(port, f"/api/task/info/{cid}") or {})
        return last if last.get("state") not in (None, "STARTED", "RECEIVED") else None
    try:
        info = wait_until(ended, 20, f"Flower to show {cid} ended")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: Flower shows it {last.get('state')}") from None
    assert (info["state"], info["exception"], info["worker"]) == ("FAILURE", reason, worker), info
    return info


@pytest.mark.cluster
def test_flower_shows_the_attempts_of_a_lost_worker_failed(redis_server, procs):
    """The worker is killed whole: nothing of it will ever send the attempt's end, so the
    scheduler does when it declares the worker lost."""
    env = {"HPCQ_WORKER_TIMEOUT": "3", "HPCQ_HEARTBEAT_INTERVAL": "0.5"}
    with running_cluster(redis_server, workers=(("w1@flower-lost", 1),), env=env) as c:
        port = flower_watching(procs, c)
        s = c.scheduler_api()
        t, cid = started_in_flower(s, port, s.create_job(name="lost"), "sleep 120 & wait")
        os.killpg(c.procs["w1@flower-lost"].pid, signal.SIGKILL)    # main and pool processes
        c.procs.pop("w1@flower-lost").wait(10)
        reason = "Node w1@flower-lost became unreachable."
        wait_until(lambda: s.get_task(t.id).state.value == "Failed", 20, "the task to be Failed")
        assert s.get_task(t.id).error_message == reason
        # its next life kills the orphaned command (the attempt ended already: it tells
        # Flower nothing)
        c.start_worker("w1@flower-lost", 1)
        assert not attempt_processes(cid)
        assert_failed_in_flower(port, cid, "w1@flower-lost", reason)


@pytest.mark.cluster
def test_flower_shows_what_a_worker_restarted_at_once_ended_failed(redis_server, procs):
    """Killed whole and restarted under its name before it could be declared lost: its next
    life ends the attempt its previous life held, and tells Flower so."""
    env = {"HPCQ_WORKER_TIMEOUT": "60", "HPCQ_HEARTBEAT_INTERVAL": "0.5"}
    with running_cluster(redis_server, workers=(("w1@flower-again", 1),), env=env) as c:
        port = flower_watching(procs, c)
        s = c.scheduler_api()
        t, cid = started_in_flower(s, port, s.create_job(name="again"), "sleep 120 & wait")
        os.killpg(c.procs["w1@flower-again"].pid, signal.SIGKILL)
        c.procs.pop("w1@flower-again").wait(10)
        c.start_worker("w1@flower-again", 1)       # registered means prepared
        assert not attempt_processes(cid)
        reason = "Node w1@flower-again became unreachable."
        assert s.get_task(t.id).state.value == "Failed" and s.get_task(t.id).error_message == reason
        assert_failed_in_flower(port, cid, "w1@flower-again", reason)


@pytest.mark.store
def test_reclaim_goes_on_when_flower_cannot_be_told(rig, store, r, redis_url, caplog):
    """The events are display only: with the broker unreachable for them, the worker is still
    declared lost, its attempt still ends, and the failure to publish is one warning."""
    from scheduler.dispatcher import Dispatcher
    from scheduler.settings import get_settings
    from scheduler.transport import make_celery
    j = rig.job({})
    rig.worker("w1", slots=1)
    rig.run("w1")
    r.zadd(keys.WORKERS, {"w1": 1})                     # silent for ages
    d = Dispatcher(get_settings(redis_url=redis_url))
    d.connected_since -= d.settings.worker_timeout       # not right after an outage of its own
    d.celery = make_celery(f"redis://127.0.0.1:{free_port()}/0")    # nobody listens there
    d.reclaim()
    assert store.task(f"{j}.1")["state"] == "Queued" and r.hget(keys.worker("w1"), "state") == "lost"
    warned = [rec.getMessage() for rec in caplog.records if rec.name == "hpcq.events"]
    assert len(warned) == 1 and warned[0].startswith(
        "could not tell Celery's monitors that 1 attempt(s) ended (0 sent): "), warned
