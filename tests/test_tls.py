"""Issue 13, secured Redis: a whole cluster (scheduler, workers, CLI, API, ``hpcq up``) on Redis
behind TLS (``rediss://``, a self-signed certificate the test makes) with a password; a wrong
password, a certificate that is not trusted or an unreachable Redis is one line and exit 1
from every command, never a traceback, and never the password."""

from __future__ import annotations

import sys
from urllib.parse import quote

import pytest

from scheduler import JobState, Scheduler
from tests.support import RedisServer, hpcq, running_cluster, wait_until
from tests.support.tls import TlsProxy, have_openssl, make_certificate

PW = "tls-s3cret/pw"

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not have_openssl(), reason="openssl is needed to make a certificate")]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(URL with password and CA, the certificate, the proxy): redis-server behind TLS."""
    d = tmp_path_factory.mktemp("tls")
    server = RedisServer(d / "redis", password=PW).start()
    cert, key = make_certificate(str(d))
    proxy = TlsProxy(server.port, cert, key).start()
    url = (f"rediss://:{quote(PW, safe='')}@127.0.0.1:{proxy.port}/0"
           f"?ssl_cert_reqs=required&ssl_ca_certs={cert}")
    try:
        yield url, cert, proxy
    finally:
        proxy.stop()
        server.stop()


def one_line_error(p, *, contains: str):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert contains in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert PW not in p.stderr and quote(PW, safe="") not in p.stderr, p.stderr


def test_cluster_on_tls_with_a_password(tls):
    url, cert, _ = tls
    with running_cluster(url, workers=(("t1@hpcq-tls", 2),)) as c:
        job = hpcq("job", "submit", "--", "echo over tls", redis_url=url)
        assert job.returncode == 0, job.stderr
        jid = job.stdout.strip()
        assert hpcq("job", "wait", jid, "--timeout", "60", redis_url=url).returncode == 0
        api = Scheduler.connect(url)
        assert api.get_task(f"{jid}.1").output == "over tls\n"
        # a cancel of a running task: the revoke travels over the TLS broker too
        long = api.submit({"command": "sleep 60"})
        wait_until(lambda: api.get_task(f"{long.id}.1").pid, 30, "the task to run")
        t = api.cancel_task(f"{long.id}.1", force=True)
        assert t.state.value == "Failed" and t.exit_code == -9
        nodes = hpcq("node", "list", "--json", redis_url=url)
        assert nodes.returncode == 0 and "t1@hpcq-tls" in nodes.stdout
        config = hpcq("config", redis_url=url)
        assert config.returncode == 0 and PW not in config.stdout and "rediss://:***@" in config.stdout
        for name in ("scheduler", "t1@hpcq-tls"):
            assert PW not in c.log(name) and quote(PW, safe="") not in c.log(name)


def test_wrong_password_untrusted_certificate_unreachable_are_one_line(tls, tmp_path):
    url, cert, proxy = tls
    wrong = url.replace(quote(PW, safe=""), "wrong-password")
    other_cert, _ = make_certificate(str(tmp_path))
    untrusted = url.replace(cert, other_cert)
    bare = f"rediss://127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    commands = [("job", "list"), ("job", "submit", "--", "true"), ("task", "view", "1.1"),
                ("node", "list"), ("job", "wait", "1")]
    for args in commands:
        one_line_error(hpcq(*args, redis_url=wrong), contains="refused the password")
    for args in commands[:2]:
        one_line_error(hpcq(*args, redis_url=bare), contains="requires a password")
        one_line_error(hpcq(*args, redis_url=untrusted), contains="cannot reach Redis at rediss://:***@")
    closed = url.replace(str(proxy.port), str(proxy.port + 1 if proxy.port < 65535 else 1))
    one_line_error(hpcq("job", "list", redis_url=closed), contains="cannot reach Redis")


def test_up_on_tls(tls, procs, tmp_path):
    url, _, _ = tls
    up = procs.start([sys.executable, "-m", "scheduler.cli", "up", "--redis", url, "--workers", "1",
                      "--concurrency", "1", "--state-dir", str(tmp_path / "state")], name="up-tls")
    wait_until(lambda: "export HPCQ_REDIS_URL=" in up.log() or up.returncode is not None, 60,
               "hpcq up to print the URL")
    assert up.running(), up.log()
    api = Scheduler.connect(url)
    job = api.submit({"command": "echo up over tls"})
    assert job.wait(timeout=60) == JobState.Finished
    assert PW not in up.log()
