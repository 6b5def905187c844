"""``hpcq flower`` on the loopback, ``hpcq up --flower``, and what Flower is given to show.

* Without credentials Flower binds 127.0.0.1 only and a public ``--address`` is refused with
  one line; with ``FLOWER_BASIC_AUTH`` it needs them (401 without, 200 with), and neither the
  credentials nor the Redis password is on its argv or in its log.
* ``hpcq up --flower`` prints Flower's URL, and Flower answers there.
* The Celery ``argsrepr`` of an attempt: the hpcq id and the command (a sweep instance's ``*``
  substituted), cut to 200 characters without splitting a character, the password masked.
  (Flower showing it, and each worker's slots, is checked through Flower's API in
  tests/test_compose.py.)"""

from __future__ import annotations

import base64
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
from tests.support import RedisServer, free_port, hpcq, wait_until

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
