"""The network-namespace test infrastructure (tests/netns.py) with real parts: a redis-server in
the root namespace on the bridge, a redis client and an hpcq worker inside namespaces, a host cut
off and healed, and nothing of it left afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis

from tests.support import wait_until
from tests.support.netns import Network, netns_available, netns_list, start_redis

_ok, _reason = netns_available()
pytestmark = [pytest.mark.cluster, pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_reason)]

#: Run inside a host: PING the Redis at argv[1] with a 2 s socket timeout; exit 0 on PONG.
PING = r"""
import sys, redis
c = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2, socket_timeout=2)
try:
    sys.exit(0 if c.ping() else 1)
except redis.RedisError as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""


@pytest.fixture
def network():
    """A Network for one test, torn down (processes killed, namespaces removed) afterwards."""
    with Network("hq") as net:
        yield net


def ping(host, url):
    return host.run([sys.executable, "-c", PING, url], timeout=30)


def test_network_fixture_makes_hosts(network):
    a, b = network.host("a"), network.host("b")
    assert (a.ns, b.ns) == (f"{network.prefix}-a", f"{network.prefix}-b")
    assert {a.ns, b.ns} <= set(netns_list())
    assert a.addr != b.addr and network.bridge_addr not in (a.addr, b.addr)
    assert all(h.veth in os.listdir("/sys/class/net") and len(h.veth) <= 15 for h in (a, b))
    assert len(network.bridge) <= 15
    res = a.run(["ip", "-4", "-o", "addr", "show"])
    assert f"{a.addr}/24" in res.stdout and "127.0.0.1" in res.stdout
    assert f"default via {network.bridge_addr}" in a.run(["ip", "route"]).stdout
    assert a.argv(["true"]) == ["ip", "netns", "exec", a.ns, "true"]
    assert a.reachable(2) and b.reachable(2)
    with pytest.raises(Exception):
        network.host("a")


def test_redis_cut_heal_and_teardown(tmp_path):
    t0 = time.monotonic()
    with Network("hq") as net:
        a, b = net.host("a"), net.host("b")
        redis_proc, port = start_redis(net, str(tmp_path))
        url = net.redis_url(port)
        try:
            # Reachable from inside, and the root namespace really is a different network stack.
            res = ping(a, url)
            assert res.returncode == 0, res.stdout + res.stderr
            res = ping(a, f"redis://127.0.0.1:{port}/0")
            assert res.returncode != 0  # a's own loopback: no Redis there

            a.cut()
            t = time.monotonic()
            res = ping(a, url)
            assert res.returncode != 0, "a cut host still reached Redis"
            assert time.monotonic() - t < 10
            assert not a.reachable(0.5)
            assert ping(b, url).returncode == 0  # only a is cut

            a.heal()
            res = ping(a, url)
            assert res.returncode == 0, res.stdout + res.stderr

            # Something left running in a namespace is killed by the teardown.
            leftover = b.popen(["sleep", "300"])
            wait_until(lambda: leftover.pid in b.pids(), 5)
            leftover_ps = psutil.Process(leftover.pid)
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
        prefix = net.prefix
        # The namespaces' identities, to find any process still in one after the teardown.
        inodes = {os.stat(f"/run/netns/{h.ns}").st_ino for h in (a, b)}

    assert net.leftovers() == []
    assert not [ns for ns in netns_list() if ns.startswith(prefix)]
    assert not [i for i in os.listdir("/sys/class/net") if i.startswith(prefix)]
    assert leftover.returncode is not None
    assert not leftover_ps.is_running()
    # A namespace's number is reused once it is freed: one that a parallel test session made
    # meanwhile may have ours (its processes are not ours: ours are named, and gone).  Ours
    # cannot be freed while a process is left in it, so a leftover is still found.
    for ns in netns_list():
        try:
            inodes.discard(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    inside = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.stat(f"/proc/{p.pid}/ns/net").st_ino in inodes:
                inside.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])}")
        except OSError:
            pass
    assert not inside, inside
    assert time.monotonic() - t0 < 30


def test_worker_in_a_namespace_registers_and_stops(network, tmp_path):
    """A real hpcq worker on host a reaches Redis (root namespace) through the bridge, registers
    and stops cleanly."""
    a = network.host("a")
    redis_proc, port = start_redis(network, str(tmp_path))
    url = network.redis_url(port)
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    logpath = tmp_path / "worker-wA.log"
    try:
        with open(logpath, "wb") as log:
            worker = a.popen([sys.executable, "-m", "scheduler.cli", "worker", "--hostname", "wA",
                              "--concurrency", "1"],
                             env={"HPCQ_REDIS_URL": url, "HPCQ_HEARTBEAT_INTERVAL": "1",
                                  "PYTHONUNBUFFERED": "1"},
                             stdout=log, stderr=subprocess.STDOUT)

        def registered():
            if worker.poll() is not None:
                raise AssertionError(f"worker exited {worker.returncode}:\n{logpath.read_text()[-3000:]}")
            for name in ("celery@wA", "wA"):  # Celery's node name for --hostname wA is celery@wA
                if r.zscore("hpcq:workers", name):
                    return name
            return None

        try:
            name = wait_until(registered, 15, what="worker wA to register")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logpath.read_text()[-3000:]}") from None
        assert worker.pid in a.pids()  # it really runs inside host a
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, logpath.read_text()[-3000:]
        assert not r.zscore("hpcq:workers", name)  # marked gone (heartbeat 0) or removed
        assert a.pids() == []
    finally:
        r.close()
        redis_proc.terminate()
        redis_proc.wait(10)


def test_teardown_after_failure_and_availability():
    assert netns_available() == (True, "")
    with pytest.raises(ZeroDivisionError):
        with Network("hq") as net:
            h = net.host("x")
            h.popen(["sleep", "300"])
            1 / 0
    assert net.leftovers() == []
