"""Several "hosts" on this one machine, as Linux network namespaces on a private bridge, for tests
where workers, a scheduler, Redis and a client each live on a host of their own and a host can be
cut off from the network and healed.

    ok, reason = netns_available()            # (False, "why") when namespaces cannot be made
    with Network("hq") as net:                 # bridge <tag>-br = net.bridge_addr, e.g. 10.57.0.1/24
        a = net.host("a")                      # namespace <tag>-a, address a.addr (10.57.0.2)
        p = a.popen([sys.executable, "-m", "scheduler.cli", "worker", ...],
                    env={"HPCQ_REDIS_URL": f"redis://{net.bridge_addr}:{port}/0"})
        a.cut()                                # a reaches nothing any more (and nothing reaches a)
        a.heal()                               # link up again; returns once a reaches the bridge
    # here: every process in the namespaces is killed, namespaces, veths and bridge are gone

The topology::

    root namespace ("the redis host", net.bridge_addr = 10.X.0.1)
      <tag>-br  bridge ── <tag>-2 veth ══ eth0 in namespace <tag>-a   (10.X.0.2, lo up)
                       └─ <tag>-3 veth ══ eth0 in namespace <tag>-b   (10.X.0.3, lo up)

* **The root namespace is the Redis host.**  It owns the bridge address, so a redis-server
  started as an ordinary child of the test (in the root namespace) with
  ``--bind <net.bridge_addr> 127.0.0.1`` is reachable at ``redis://<net.bridge_addr>:PORT`` from
  every namespace (``net.redis_url(port)``) and at ``127.0.0.1:PORT`` from the test itself
  (``start_redis(net, workdir)`` does this).
  Cutting a host severs it from Redis too; Redis itself is never cut (to lose Redis, stop it).
* Hosts reach each other and the root namespace over the bridge.  Each has a default route via
  the bridge address, but IPv4 forwarding is switched off on the bridge, so nothing a host sends
  ever leaves the machine: the only addresses in play are ours.  No IPv6 on the bridge or veths.
* ``host.cut()`` sets the host's veth end in the root namespace down: its packets are dropped
  both ways and its TCP connections hang (as on a pulled cable; no RST, no FIN) until
  ``host.heal()``, after which they carry on (after TCP's retransmission backoff) unless a
  timeout on either side gave up meanwhile.  The unit of a cut is the whole host.
  ``host.kill_all()`` is a host crash (SIGKILL to everything in it).
* Processes: ``host.argv(argv)`` is ``ip netns exec NS argv...`` (``ip`` execs the command, so
  the pid is the command's, and env and cwd are inherited): hand it to any starter, e.g.
  ``helpers.Proc``/``procs.start``.  ``host.popen`` / ``host.run`` are conveniences.
  ``host.pids()`` lists what runs inside.
* If the machine filters bridged traffic (``bridge-nf-call-iptables`` = 1 with an iptables
  FORWARD policy of DROP, as Docker sets), host-to-host traffic may be dropped; host-to-root
  (Redis) traffic is not affected.
* The 10.X.0.0/24 subnet is chosen (under a lock file, so parallel runs never pick the same one)
  so that it overlaps no address or route already on the machine.
* Every name carries a random tag (``net.prefix``, e.g. ``hq3f9a1c``), so parallel or left-over
  runs never collide; interface names stay within 15 characters.  Teardown (also after a failed
  test) kills every process still inside the namespaces (``ip netns pids``) and waits until they
  are gone, then removes the namespaces, the veths and the bridge.  A run that died without its
  teardown (SIGKILL) is cleaned up by the next ``Network`` on the machine: each run records what
  it made in ``/run/hpcq-netns/<tag>.json`` with its pid.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's ``ip`` (Debian/Ubuntu:
``apt-get install -y iproute2``).  Tests call ``netns_available()`` and skip with its reason.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time

import psutil

from tests.support.procs import die_with_parent as _die_with_parent
from tests.support.redis_server import RedisServer

IP = "ip"
REGISTRY_DIR = "/run/hpcq-netns"

#: The program ``Host.reachable``/``heal`` run inside a namespace: connect to the bridge address
#: on a port that is bound but never listened on, so the root namespace answers with a RST; a
#: refusal (or an accept) proves the round trip works.  Exit 0 when reachable before the deadline.
_PROBE = r"""
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
        sys.exit(0)
    except ConnectionRefusedError:
        sys.exit(0)
    except OSError as exc:
        if time.monotonic() >= deadline:
            print(exc)
            sys.exit(1)
        time.sleep(0.05)
"""


class NetnsError(RuntimeError):
    pass


def _ip(*args, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([IP, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30)
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _netns_exists(name: str) -> bool:
    return name in netns_list()


def netns_list() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    res = _ip("netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    """Live processes in namespace ``ns`` (``ip netns pids``; zombies are not listed)."""
    res = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in res.stdout.split() if x.isdigit()]


def _kill_netns_processes(namespaces, timeout: float = 15.0) -> list[str]:
    """SIGKILL every process in ``namespaces`` until none is left (new ones forked meanwhile are
    caught by the next sweep); returns descriptions of any still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        procs = []
        for ns in namespaces:
            for pid in netns_pids(ns):
                if pid == os.getpid():
                    continue
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
        if not procs:
            return []
        if time.monotonic() >= deadline:
            out = []
            for p in procs:
                try:
                    out.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
                except psutil.Error:
                    out.append(f"pid {p.pid}")
            return out
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        # Reaps the ones that are our children; for the others, "gone" means dead or a zombie.
        psutil.wait_procs(procs, timeout=min(2.0, max(0.1, deadline - time.monotonic())))


@functools.lru_cache(maxsize=None)
def netns_available() -> tuple[bool, str]:
    """Whether this machine lets us make namespaces, veths and a bridge: ``(True, "")`` or
    ``(False, reason)`` for ``pytest.skip(reason)``.  Tries it for real and cleans up."""
    if not sys.platform.startswith("linux"):
        return False, f"network namespaces need Linux (this is {sys.platform})"
    if shutil.which(IP) is None:
        return False, "iproute2's `ip` is not installed (Debian/Ubuntu: apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return False, "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    tag = "hqp" + secrets.token_hex(3)
    ns, br, veth = f"{tag}-probe", f"{tag}-br", f"{tag}-v"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", "name", br, "type", "bridge")
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", br)
        _ip("-n", ns, "link", "set", "lo", "up")
        res = subprocess.run([IP, "netns", "exec", ns, "true"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            return False, f"cannot run a process in a network namespace: {res.stderr.strip()}"
        return True, ""
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot make network namespaces here: {exc}"
    finally:
        _ip("link", "del", veth, check=False)
        _ip("link", "del", br, check=False)
        _ip("netns", "del", ns, check=False)


def _no_forwarding(bridge: str) -> None:
    """Never route a host's packets off the bridge: IPv4 forwarding off for packets that come in
    on it (a per-interface switch; the machine's other interfaces are left alone)."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding", "w") as f:
            f.write("0\n")
        return
    except OSError as exc:
        error = exc
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            if f.read().strip() == "0":
                return  # the machine forwards nothing anyway
    except OSError:
        pass
    raise NetnsError(f"cannot switch off IPv4 forwarding on {bridge}: {error}")


# -- the registry of runs (for cleaning up after one that died without its teardown) ----------

def _registry_dir() -> str:
    for d in (REGISTRY_DIR, os.path.join("/tmp", "hpcq-netns")):
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    raise NetnsError("no writable directory for the netns registry")


class _Lock:
    """An exclusive lock between the Network objects of every process on this machine."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, ".lock")

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _owner_alive(rec: dict) -> bool:
    try:
        p = psutil.Process(int(rec["pid"]))
        return abs(p.create_time() - float(rec["created"])) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def _remove_all(namespaces, veths, bridge) -> list[str]:
    """Kill every process in ``namespaces``, then delete them, the veths and the bridge.
    Returns the problems (empty when everything is gone)."""
    problems = []
    namespaces = [ns for ns in namespaces if _netns_exists(ns)]
    left = _kill_netns_processes(namespaces)
    if left:
        problems.append("processes still in the namespaces:\n  " + "\n  ".join(left))
    for ns in namespaces:
        res = _ip("netns", "del", ns, check=False)
        if res.returncode != 0 and _netns_exists(ns):
            problems.append(f"ip netns del {ns}: {res.stderr.strip()}")
    for link in [*veths, *([bridge] if bridge else [])]:
        if _link_exists(link):
            res = _ip("link", "del", link, check=False)
            if res.returncode != 0 and _link_exists(link):
                problems.append(f"ip link del {link}: {res.stderr.strip()}")
    # Deleting a namespace frees its veth end asynchronously: wait until both ends are gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_link_exists(v) for v in veths):
        time.sleep(0.05)
    still = [v for v in veths if _link_exists(v)] + [ns for ns in namespaces if _netns_exists(ns)]
    if still:
        problems.append(f"still present: {still}")
    return problems


def reap_stale(directory: str | None = None) -> list[str]:
    """Remove what runs whose process is gone left behind (a SIGKILLed pytest); returns their
    tags.  Called (under the lock) by every ``Network`` on entry."""
    directory = directory or _registry_dir()
    reaped = []
    for fname in sorted(os.listdir(directory)):
        if not fname.endswith(".json"):
            continue
        path = os.path.join(directory, fname)
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if _owner_alive(rec):
            continue
        if not _remove_all(rec.get("namespaces", []), rec.get("veths", []), rec.get("bridge")):
            os.unlink(path)
            reaped.append(fname[:-5])
    return reaped


# -- hosts and the network ----------------------------------------------------------------------

class Host:
    """One "host": a network namespace ``ns`` with address ``addr`` on the network's bridge.
    Run things in it with ``argv()`` (to hand to any process starter, e.g. helpers.Proc),
    ``popen()`` or ``run()``."""

    def __init__(self, net: "Network", name: str, ns: str, addr: str, veth: str):
        self.net = net
        self.name = name
        self.ns = ns
        self.addr = addr
        self.veth = veth  # its end in the root namespace, on the bridge
        self.is_cut = False

    def __repr__(self) -> str:
        return f"<Host {self.name} ns={self.ns} addr={self.addr}{' CUT' if self.is_cut else ''}>"

    def argv(self, argv) -> list[str]:
        """``argv`` run inside this host's namespace (the environment and cwd are kept)."""
        return [IP, "netns", "exec", self.ns, *[str(a) for a in argv]]

    def popen(self, argv, env: dict | None = None, die_with_parent: bool = True,
              **kw) -> subprocess.Popen:
        """``subprocess.Popen`` of ``argv`` inside this host.  ``env`` is added to (not a
        replacement of) this process's environment; other keywords go to Popen (default: stdin
        from /dev/null, a session of its own).  The process gets SIGKILL if the test process dies
        without its teardown, and is killed at the latest when the network is torn down."""
        full_env = dict(os.environ)
        full_env.update({str(k): str(v) for k, v in (env or {}).items()})
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        if die_with_parent:
            kw.setdefault("preexec_fn", _die_with_parent)
        p = subprocess.Popen(self.argv(argv), env=full_env, **kw)
        self.net._popens.append(p)
        return p

    def run(self, argv, timeout: float = 60, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        """``subprocess.run`` of ``argv`` inside this host; text output captured, not checked."""
        full_env = dict(os.environ)
        full_env.update({str(k): str(v) for k, v in (env or {}).items()})
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(argv), env=full_env, timeout=timeout, **kw)

    def pids(self) -> list[int]:
        """Live processes inside this host."""
        return netns_pids(self.ns)

    def kill_all(self, timeout: float = 15.0) -> None:
        """SIGKILL every process inside this host and wait until they are gone (a host crash)."""
        left = _kill_netns_processes([self.ns], timeout)
        if left:
            raise NetnsError(f"processes in {self.ns} survived SIGKILL:\n  " + "\n  ".join(left))

    def reachable(self, timeout: float = 2.0) -> bool:
        """Whether this host can reach the bridge address (the root namespace) and get an answer,
        trying for up to ``timeout`` seconds."""
        res = self.run([sys.executable, "-c", _PROBE, self.net.bridge_addr, str(self.net._probe_port),
                        str(timeout)], timeout=timeout + 30)
        return res.returncode == 0

    def cut(self) -> None:
        """Pull the cable: the host's veth end in the root namespace goes down, so the host can
        reach nothing (not Redis, not the other hosts) and nothing reaches it.  Its processes
        keep running; its TCP connections hang."""
        _ip("link", "set", "dev", self.veth, "down")
        self.is_cut = True

    def heal(self, timeout: float = 10.0) -> None:
        """Plug the cable back in and return once the host reaches the bridge address again
        (raises NetnsError after ``timeout`` seconds)."""
        _ip("link", "set", "dev", self.veth, "up")
        self.is_cut = False
        if not self.reachable(timeout):
            raise NetnsError(f"{self.name} ({self.ns}) cannot reach {self.net.bridge_addr} "
                             f"{timeout}s after heal")


class Network:
    """A private bridge in the root namespace and ``host(name)`` namespaces on it; a context
    manager (use one per test, e.g. as a fixture) that removes all of it on exit.

    Attributes: ``prefix`` (the unique tag in every name), ``bridge`` (its interface name),
    ``bridge_addr`` (the root namespace's address on it, where Redis listens), ``subnet``
    (an ``ipaddress.IPv4Network``), ``hosts`` (name -> Host)."""

    def __init__(self, prefix: str = "hq"):
        prefix = "".join(c for c in prefix.lower() if c.isalnum())[:4] or "hq"
        self.prefix = prefix + secrets.token_hex(3)  # <= 10 chars
        self.bridge = f"{self.prefix}-br"
        self.subnet: ipaddress.IPv4Network | None = None
        self.bridge_addr: str | None = None
        self.hosts: dict[str, Host] = {}
        self._next = 2
        self._popens: list[subprocess.Popen] = []
        self._probe_sock: socket.socket | None = None
        self._probe_port = 0
        self._dir: str | None = None
        self._created = False
        self._pending_ns: list[str] = []  # a host being made (recorded before it exists)
        self._pending_veth: list[str] = []

    # -- bookkeeping ---------------------------------------------------------------------------

    def _record(self) -> None:
        me = psutil.Process()
        rec = {"pid": me.pid, "created": me.create_time(), "bridge": self.bridge,
               "subnet": str(self.subnet) if self.subnet else None,
               "namespaces": [h.ns for h in self.hosts.values()] + self._pending_ns,
               "veths": [h.veth for h in self.hosts.values()] + self._pending_veth}
        path = os.path.join(self._dir, f"{self.prefix}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, path)

    @staticmethod
    def _used_networks() -> list[ipaddress.IPv4Network]:
        used = []
        for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
            parts = line.split()
            if "inet" in parts:
                used.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
        for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
            parts = line.split()
            if not parts:
                continue
            dst = parts[1] if parts[0] in ("local", "broadcast", "unicast", "multicast", "anycast",
                                           "blackhole", "unreachable", "prohibit", "throw", "nat") else parts[0]
            if dst == "default":
                continue
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
        return used

    def _choose_subnet(self) -> ipaddress.IPv4Network:
        used = self._used_networks()
        candidates = list(range(16, 251))
        random.shuffle(candidates)
        for x in candidates:
            net = ipaddress.ip_network(f"10.{x}.0.0/24")
            if not any(net.overlaps(u) for u in used):
                return net
        raise NetnsError("no free 10.X.0.0/24 subnet on this machine")

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Network":
        ok, reason = netns_available()
        if not ok:
            raise NetnsError(reason)
        self._dir = _registry_dir()
        try:
            with _Lock(self._dir):
                reap_stale(self._dir)
                self.subnet = self._choose_subnet()
                self.bridge_addr = str(self.subnet.network_address + 1)
                self._record()
                self._created = True
                mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
                # A fixed MAC: a bridge otherwise takes its ports' lowest, which changes (and
                # breaks the hosts' ARP entries) whenever a host is added.
                _ip("link", "add", "name", self.bridge, "address", mac, "type", "bridge",
                    "stp_state", "0", "forward_delay", "0")
                _ip("link", "set", "dev", self.bridge, "addrgenmode", "none")
                _no_forwarding(self.bridge)
                _ip("addr", "add", f"{self.bridge_addr}/{self.subnet.prefixlen}", "dev", self.bridge)
                _ip("link", "set", "dev", self.bridge, "up")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((self.bridge_addr, 0))  # bound, never listening: a SYN to it gets a RST
            self._probe_sock, self._probe_port = s, s.getsockname()[1]
        except BaseException:
            self.close()
            raise
        return self

    def host(self, name: str) -> Host:
        """A new host: namespace ``<prefix>-<name>`` with ``lo`` up and ``eth0`` at the next
        address of the subnet, its veth peer ``<prefix>-<n>`` on the bridge, and a default route
        via the bridge address."""
        if not self._created or self.subnet is None:
            raise NetnsError("use the Network as a context manager first")
        if name in self.hosts:
            raise NetnsError(f"host {name!r} exists already")
        if not name or "/" in name or name.startswith("."):
            raise NetnsError(f"bad host name {name!r}")
        n = self._next
        if n > 254:
            raise NetnsError("no addresses left on the subnet")
        self._next += 1
        ns, veth = f"{self.prefix}-{name}", f"{self.prefix}-{n}"
        addr = str(self.subnet.network_address + n)
        self._pending_ns, self._pending_veth = [ns], [veth]
        self._record()
        try:
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", "dev", veth, "addrgenmode", "none")
            _ip("link", "set", "dev", veth, "master", self.bridge)
            _ip("link", "set", "dev", veth, "up")
            _ip("-n", ns, "link", "set", "dev", "lo", "up")
            _ip("-n", ns, "link", "set", "dev", "eth0", "addrgenmode", "none")
            _ip("-n", ns, "addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "dev", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", self.bridge_addr)
        except BaseException:
            problems = _remove_all([ns], [veth], None)
            self._pending_ns, self._pending_veth = [], []
            self._record()
            if problems:
                raise NetnsError("; ".join(problems))
            raise
        h = Host(self, name, ns, addr, veth)
        self.hosts[name] = h
        self._pending_ns, self._pending_veth = [], []
        self._record()
        return h

    def redis_url(self, port: int, db: int = 0) -> str:
        """The URL of a Redis in the root namespace on the bridge address, as the hosts see it."""
        return f"redis://{self.bridge_addr}:{port}/{db}"

    def leftovers(self) -> list[str]:
        """What of this network still exists (namespaces, interfaces), e.g. to assert after exit."""
        mine = [ns for ns in netns_list() if ns.startswith(self.prefix + "-")]
        if os.path.isdir("/sys/class/net"):
            mine += [i for i in os.listdir("/sys/class/net") if i.startswith(self.prefix + "-")]
        return mine

    def close(self) -> None:
        """Kill every process in the namespaces (waiting until gone), remove the namespaces, veths
        and bridge.  Idempotent; raises NetnsError if something could not be removed."""
        if self._probe_sock is not None:
            self._probe_sock.close()
            self._probe_sock = None
        for p in self._popens:  # our own children: kill and reap them
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._popens.clear()
        if not self._created:
            return
        namespaces = [h.ns for h in self.hosts.values()] + self._pending_ns
        veths = [h.veth for h in self.hosts.values()] + self._pending_veth
        # Anything named with our tag (e.g. a host whose creation was interrupted).
        namespaces += [ns for ns in netns_list() if ns.startswith(self.prefix + "-") and ns not in namespaces]
        problems = _remove_all(namespaces, veths, self.bridge)
        left = self.leftovers()
        if left:
            problems.append(f"left behind: {left}")
        if problems:
            raise NetnsError("Network teardown: " + "; ".join(problems))
        self.hosts.clear()
        self._created = False
        try:
            os.unlink(os.path.join(self._dir, f"{self.prefix}.json"))
        except OSError:
            pass

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except NetnsError:
            if exc_type is None:
                raise  # otherwise do not mask the test's own failure


# -- Redis in the root namespace -----------------------------------------------------------------

def start_redis(net: Network, workdir: str, port: int | None = None,
                extra_args=()) -> tuple[subprocess.Popen, int]:
    """A ``RedisServer`` in the root namespace, bound to the bridge address and 127.0.0.1 on a
    port free on both, no persistence, SIGKILLed if the test process dies.  Returns
    ``(popen, port)`` once it answers PING; reach it at ``net.redis_url(port)`` from the hosts.
    Stop it with ``proc.terminate(); proc.wait()``."""
    server = RedisServer(workdir, port=port, bind=f"{net.bridge_addr} 127.0.0.1",
                         extra_args=["--protected-mode", "no", *extra_args])
    try:
        server.start()
    except RuntimeError as exc:
        raise NetnsError(str(exc)) from None
    return server.proc, server.port
