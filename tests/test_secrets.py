"""Issue 10, secrets stay secret: with a Redis that requires a password, no task sees hpcq's
Redis URL or the password in its environment, no process of ``hpcq up`` has the password on its
command line, logs and CLI output show it only in the ``export HPCQ_REDIS_URL=`` line that
``hpcq up`` prints for the user, and a wrong password or an unreachable Redis is one line."""

from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest
import redis

from tests.support import free_port, wait_until
from tests.support import as_cluster, describe, hpcq
from tests.support.procs import cmdlines
from tests.support import RedisServer

pytestmark = pytest.mark.cluster

PW = "s3cr3t-Pw-7f4c2a"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("redis-pw"), password=PW)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def bare_url(server):
    """The server's URL without the password."""
    return f"redis://{server.host}:{server.port}/0"


@pytest.fixture(scope="module")
def pw_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "redis-password"
    path.write_text(PW + "\n")
    path.chmod(0o600)
    return str(path)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCQ_")}
    env.update({"PYTHONUNBUFFERED": "1", "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2",
                "HPCQ_HEARTBEAT_INTERVAL": "1", **extra})
    return env


def cli(url, *args, code=0, **env):
    """``hpcq ARGS`` with the URL in the environment (not on the argv); no password in output."""
    p = hpcq(*args, redis_url=url, env=env, timeout=60)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    assert PW not in p.stdout + p.stderr, (args, p.stdout, p.stderr)
    return p


def assert_one_line(p, *absent):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith("error:") and p.stderr.count("\n") == 1, repr(p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    for text in (PW, *absent):
        assert text not in p.stderr + p.stdout, (text, p.stderr)


@pytest.mark.parametrize("via", ["url", "file"])
def test_up_keeps_the_password_out_of_tasks_argv_and_logs(via, server, bare_url, pw_file,
                                                           tmp_path, procs):
    state = tmp_path / "state"
    env_file = tmp_path / "task-env.txt"
    if via == "url":
        up_url, env = server.url, clean_env()
    else:
        up_url, env = bare_url, clean_env(HPCQ_REDIS_PASSWORD_FILE=pw_file)
    server.client().flushall()
    up = procs.start([sys.executable, "-m", "scheduler.cli", "up", "--redis", up_url,
                      "--workers", "1", "--concurrency", "1", "--state-dir", str(state)],
                     env=env, name="up")
    wait_until(lambda: "export HPCQ_REDIS_URL=" in up.log() or up.returncode is not None, 60,
               "hpcq up to print the URL")
    assert up.running(), up.log()
    r = server.client()
    wait_until(lambda: r.zcard("hpcq:workers") > 0 or up.returncode is not None, 60,
               "the worker to register")
    assert up.running(), up.log()

    # a task run by that worker, submitted through the CLI (URL in the CLI's environment); it
    # writes its environment, then waits for the file "go"
    cli_env = {"HPCQ_REDIS_PASSWORD_FILE": pw_file} if via == "file" else {}
    go = tmp_path / "go"
    job = cli(up_url, "job", "submit", "--name", "env", "--",
              f"env > {env_file}.tmp && mv {env_file}.tmp {env_file} && "
              f"while [ ! -e {go} ]; do sleep 0.05; done", **cli_env).stdout.strip()
    wait_until(env_file.exists, 60, "the task to start")

    # every process of the cluster, the task's included: none has the password on its argv
    tree = psutil.Process(up.pid).children(recursive=True)
    argvs = " ".join(cmdlines(tree))
    assert "scheduler" in argvs and "worker" in argvs and str(go) in argvs, describe(tree)
    assert PW not in argvs and "--redis" not in argvs, describe(tree)

    go.touch()
    cli(up_url, "job", "wait", job, "--timeout", "60", **cli_env)
    cli(up_url, "task", "view", f"{job}.1", **cli_env)
    task_env = env_file.read_text()
    assert "HPCQ_TASK_ID=" in task_env, task_env          # it is the task's environment
    assert PW not in task_env, task_env
    assert "HPCQ_REDIS_URL" not in task_env and "HPCQ_REDIS_PASSWORD" not in task_env, task_env

    up.send_signal(signal.SIGTERM)
    up.popen.wait(60)
    assert up.returncode == 0, up.log()

    # hpcq up's own output: the password only in the export line it prints for the user
    for line in up.log().splitlines():
        assert PW not in line or line.startswith("export HPCQ_REDIS_URL="), line
    logs = sorted((state / "log").iterdir())
    assert logs, "no logs in the state dir"
    for path in logs:
        assert PW not in path.read_text(errors="replace"), path


def test_wrong_password_one_line_exit_1(server):
    wrong = f"redis://:not-{PW}@{server.host}:{server.port}/0"
    p = hpcq("job", "list", redis_url=wrong, timeout=60)
    assert_one_line(p, f"not-{PW}")
    assert "password" in p.stderr, p.stderr


def test_missing_password_one_line_exit_1(bare_url):
    p = hpcq("job", "list", redis_url=bare_url, timeout=60)
    assert_one_line(p)
    assert "HPCQ_REDIS_PASSWORD_FILE" in p.stderr, p.stderr


def test_unreachable_port_one_line_exit_1(server):
    dead = free_port()    # nothing listens there
    url = f"redis://:{PW}@127.0.0.1:{dead}/0"
    for args in (["job", "list"], ["--redis", url, "job", "list"]):
        p = hpcq(*args, redis_url=url, timeout=60)
        assert_one_line(p)
        assert f"redis://:***@127.0.0.1:{dead}/0" in p.stderr, p.stderr


def test_malformed_url_does_not_show_the_password():
    for url in (f"redis://:{PW}@127.0.0.1:notaport/0", f"redis://:{PW}/x@127.0.0.1:1/0"):
        p = hpcq("job", "list", redis_url=url, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (p.returncode, p.stderr)
        assert PW not in p.stderr and "x@" not in p.stderr, p.stderr


def test_password_file_with_a_bare_url(server, bare_url, pw_file):
    server.client().flushall()
    as_cluster(server.client())
    p = cli(bare_url, "job", "submit", "--name", "pwfile", "--", "true",
            HPCQ_REDIS_PASSWORD_FILE=pw_file)
    job = p.stdout.strip()
    listed = cli(bare_url, "job", "list", "--all", HPCQ_REDIS_PASSWORD_FILE=pw_file).stdout
    assert "pwfile" in listed, listed
    p = hpcq("job", "list", redis_url=bare_url, timeout=60,
             env={"HPCQ_REDIS_PASSWORD_FILE": pw_file + ".missing"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, (p.returncode, p.stderr)
    assert job


def test_up_embedded_redis_takes_the_password_file(pw_file, tmp_path, procs):
    up = procs.start([sys.executable, "-m", "scheduler.cli", "up", "--workers", "0",
                      "--state-dir", str(tmp_path / "state")],
                     env=clean_env(HPCQ_REDIS_PASSWORD_FILE=pw_file), name="up-embedded")
    line = wait_until(lambda: next((x for x in up.log().splitlines()
                                    if x.startswith("export HPCQ_REDIS_URL=")), None)
                      or up.returncode is not None, 60, "hpcq up to print the URL")
    assert up.running(), up.log()
    url = line.partition("=")[2]
    assert PW not in up.log() and f"export HPCQ_REDIS_PASSWORD_FILE={pw_file}" in up.log()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
    assert redis.Redis.from_url(url, password=PW).ping()
    redis_procs = [p for p in psutil.Process(up.pid).children(recursive=True)
                   if "redis-server" in " ".join(p.cmdline())]
    assert redis_procs and all(PW not in " ".join(p.cmdline()) for p in redis_procs)
    up.send_signal(signal.SIGTERM)
    up.popen.wait(60)
    assert up.returncode == 0, up.log()
