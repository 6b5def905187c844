"""The test infrastructure itself: the session redis-server, the per-test flush, and Proc /
procs cleaning up every process a child started."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid

import psutil
import pytest
import redis

from tests.support import Proc, hpcq, no_task_processes, wait_until


@pytest.mark.store
def test_redis_server_answers(redis_server):
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    assert port != 6379
    client = redis.Redis.from_url(redis_server)
    assert client.ping()
    assert os.environ["HPCQ_REDIS_URL"] == redis_server
    info = client.info("server")
    assert int(info["tcp_port"]) == port
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"
    client.close()


@pytest.mark.store
def test_redis_url_starts_empty_1(r):
    assert r.dbsize() == 0
    r.set("leftover", "x")
    r.execute_command("SELECT", 0)


@pytest.mark.store
def test_redis_url_starts_empty_2(r, redis_url):
    assert r.get("leftover") is None
    assert r.dbsize() == 0
    assert isinstance(r.ping(), bool)
    r.set("k", "v")
    assert r.get("k") == "v"  # decode_responses


@pytest.mark.unit
def test_wait_until():
    t0 = time.monotonic()
    box = []
    assert wait_until(lambda: box.append(1) or (len(box) >= 3 and "done"), 5, interval=0.01) == "done"
    with pytest.raises(AssertionError, match="the thing"):
        wait_until(lambda: False, 0.2, what="the thing")
    assert time.monotonic() - t0 < 3


SPAWNER = r"""
import os, subprocess, sys, time
marker = sys.argv[1]
sleeper = [sys.executable, "-c", "import time; time.sleep(300)", marker + "-sleeper"]
subprocess.Popen(sleeper)                           # a plain child
subprocess.Popen(sleeper, start_new_session=True)   # a child in a session of its own
if os.fork() == 0:                                  # an orphan: its parent exits at once
    subprocess.Popen(sleeper)
    os._exit(0)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.cluster
def test_proc_stop_kills_the_whole_family(tmp_path):
    marker = f"infra-{uuid.uuid4().hex}"
    p = Proc([sys.executable, "-c", SPAWNER, marker], logdir=tmp_path, name="spawner")
    try:
        wait_until(lambda: "ready" in p.log(), 20, what="spawner ready")
        wait_until(lambda: len(no_task_processes(marker + "-sleeper")) == 3, 20, what="three sleepers")
        assert len(no_task_processes(marker)) == 4
        assert {q.pid for q in no_task_processes(marker)} <= {q.pid for q in p.family()}
        rc = p.stop(timeout=2)
        assert rc == -signal.SIGTERM
        wait_until(lambda: not no_task_processes(marker), 10, what="sleepers gone")
        assert p.family() == []
    finally:
        p.kill()


@pytest.mark.cluster
def test_proc_stop_escalates_to_sigkill(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
    p = Proc([sys.executable, "-c", code], env={"FOO": "bar"}, logdir=tmp_path)
    try:
        wait_until(lambda: "up" in p.log(), 20)
        t0 = time.monotonic()
        assert p.stop(timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - t0 < 10
    finally:
        p.kill()


@pytest.mark.cluster
def test_procs_fixture(procs):
    p = procs.start([sys.executable, "-c", "import os; print(os.environ['FOO'], flush=True); import time; time.sleep(300)"],
                    env={"FOO": "hello"})
    wait_until(lambda: "hello" in p.log(), 20)
    assert p.running()
    assert psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE


@pytest.mark.cluster
def test_hpcq_runs_the_cli(redis_url):
    res = hpcq("--help", redis_url=redis_url)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout
