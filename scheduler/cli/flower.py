"""``hpcq flower``: Flower, Celery's web monitor, for the cluster's Celery app, started in this
process.

Why in-process rather than ``celery --broker URL flower ...``: every secret stays in memory.
The broker URL (with the password of ``HPCQ_REDIS_PASSWORD_FILE``) is the app's config, and
the basic-auth credentials go to Flower through its own ``FLOWER_BASIC_AUTH`` variable in this
process's environment, so neither is on any argv that ``ps`` shows.  ``--basic-auth`` may
itself come from ``FLOWER_BASIC_AUTH`` (how compose passes it) for the same reason.

Flower without credentials lets anyone who reaches the port see every task's command and cancel
tasks (its Revoke/Terminate buttons are hpcq cancels), so without ``--basic-auth`` it binds the
loopback only and a public ``--address`` is refused."""

from __future__ import annotations

import ipaddress
import os
import socket

import click

from scheduler.cli import common
from scheduler.cli.common import redis_option
from scheduler.errors import InvalidInput

DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"
AUTH_VAR = "FLOWER_BASIC_AUTH"


def is_loopback(address: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; anything else (``0.0.0.0``, ``''``: every
    interface; a hostname: whatever it resolves to) counts as public."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_basic_auth(value: str | None) -> str | None:
    """``user:pass`` (several as ``u1:p1,u2:p2``, Flower's form); a one-line error otherwise."""
    if value is None or value == "":
        return None
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise InvalidInput("invalid --basic-auth: expected USER:PASSWORD "
                               "(several as USER1:PASS1,USER2:PASS2)")
    return value


def check_address(address: str, basic_auth: str | None) -> str:
    if not address:
        raise InvalidInput("invalid --address: empty (give 0.0.0.0 for every interface)")
    if basic_auth is None and not is_loopback(address):
        raise InvalidInput(f"refusing to serve Flower on {address} without --basic-auth "
                           "(or FLOWER_BASIC_AUTH): anyone reaching it could cancel tasks")
    return address


def check_port_free(address: str, port: int) -> None:
    """A taken port is one clear line here, not a Tornado traceback later."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address.strip("[]"), port))
        except OSError as exc:
            raise InvalidInput(f"cannot serve Flower on {address}:{port}: "
                               f"{exc.strerror or exc}") from None


def url_of(address: str, port: int) -> str:
    shown = DEFAULT_ADDRESS if address in ("0.0.0.0", "::") else address
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


@click.command("flower")
@click.option("--port", "-p", type=click.IntRange(min=1, max=65535), default=DEFAULT_PORT,
              show_default=True, metavar="P", help="Port to serve Flower on.")
@click.option("--address", "-a", default=DEFAULT_ADDRESS, show_default=True, metavar="A",
              help="Address to bind; one that is not a loopback needs --basic-auth.")
@click.option("--basic-auth", metavar="USER:PASS", envvar=AUTH_VAR, show_envvar=True,
              help="HTTP basic auth for the UI and API (better from the environment: an argv "
                   "is visible in ps).")
@redis_option
def flower_cmd(port, address, basic_auth):
    """Run Flower, Celery's web monitor, on this cluster (needs the `flower` extra).

    Each attempt shows as one Celery task `hpcq.run` whose args are the hpcq task id and its
    command; each worker shows its slots as its pool's max concurrency."""
    basic_auth = check_basic_auth(basic_auth)
    address = check_address(address, basic_auth)
    try:
        import flower  # noqa: F401
    except ImportError:
        raise InvalidInput("Flower is not installed: pip install 'hpcq[flower]'") from None
    check_port_free(address, port)
    cfg = common.settings()
    from scheduler.transport import make_celery
    app = make_celery(cfg.redis_url)
    # Flower reads FLOWER_* variables before its argv; the argv below is this process's own
    # list, never an exec's, and carries no secret either.
    if basic_auth:
        os.environ[AUTH_VAR] = basic_auth
    else:
        os.environ.pop(AUTH_VAR, None)
    click.echo(f"hpcq flower: serving {cfg.masked_url} at {url_of(address, port)}"
               + ("" if basic_auth else " (no authentication: loopback only)"), err=True)
    app.start(["flower", f"--port={port}", f"--address={address}"])


def flower_port_for(wanted: bool, port: int | None) -> int | None:
    """``hpcq up --flower [--flower-port P]``: the port to run Flower on (None: no Flower).
    A port given and taken is refused; the default 5555, if taken, becomes a free one."""
    if not wanted and port is None:
        return None
    try:
        import flower  # noqa: F401
    except ImportError:
        raise InvalidInput("--flower needs Flower: pip install 'hpcq[flower]'") from None
    if port is not None:
        check_port_free(DEFAULT_ADDRESS, port)
        return port
    try:
        check_port_free(DEFAULT_ADDRESS, DEFAULT_PORT)
        return DEFAULT_PORT
    except InvalidInput:
        with socket.socket() as s:
            s.bind((DEFAULT_ADDRESS, 0))
            return s.getsockname()[1]
