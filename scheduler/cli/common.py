"""What every command shares: ``--redis``, ``--json``, the connection, and parsing of ids,
states, sweeps and ``K=V`` pairs into what the API takes."""

from __future__ import annotations

import contextlib
import re
import shlex
from urllib.parse import unquote, urlsplit

import click

from scheduler.api.client import Scheduler, check_url
from scheduler.api.model import submitter_environment
from scheduler.core import resources
from scheduler.errors import InvalidInput
from scheduler.settings import Settings, get_settings, mask_url
from scheduler.core.states import JobState, TaskState

#: The URL the current invocation uses, for the error handler (set by ``--redis``).
current = {"redis_url": None}


def _set_redis(ctx: click.Context, param, value):
    if value:
        ctx.meta["hpcq.redis"] = value
        current["redis_url"] = value
    return value


def redis_option(f=None, *, help="Redis of the cluster [default: $HPCQ_REDIS_URL]."):
    option = click.option("--redis", "redis_url", metavar="URL", expose_value=False,
                          callback=_set_redis, is_eager=True, help=help)
    return option(f) if f is not None else option


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document instead of text.")(f)


def settings() -> Settings:
    ctx = click.get_current_context()
    cfg = get_settings(redis_url=ctx.meta.get("hpcq.redis"))
    current["redis_url"] = cfg.redis_url
    check_url(cfg.redis_url)
    return cfg


def connect() -> Scheduler:
    """The cluster of this invocation; a Redis that holds none is an error, not an empty list."""
    return Scheduler.connect(settings().redis_url, require_cluster=True)


def redact(text: str, *urls: str | None) -> str:
    """``text`` with each of ``urls`` masked, and its password hidden wherever else it appears
    (as written or percent-decoded; also when the URL is malformed)."""
    secrets: set[str] = set()
    for url in filter(None, urls):
        text = text.replace(url, mask_url(url))
        userinfo, at, _ = url.partition("://")[2].rpartition("@")
        with contextlib.suppress(ValueError):
            secrets.add(urlsplit(url).password or "")
        if at:
            secrets.add(userinfo.partition(":")[2])
    for secret in sorted(secrets | {unquote(s) for s in secrets}, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def parse_states(text: str | None, enum) -> set | None:
    """``Running,queued`` -> {Running, Queued}; ``All`` -> None (no filter)."""
    if not text:
        return None
    wanted = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() == "all":
            return None
        match = [s for s in enum if s.value.lower() == part.lower()]
        if not match:
            raise InvalidInput(f"invalid state {part!r}: one of {', '.join(s.value for s in enum)}")
        wanted.add(match[0])
    return wanted or None


def parse_job_states(text):
    return parse_states(text, JobState)


def parse_task_states(text):
    return parse_states(text, TaskState)


_SWEEP = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*(?::\s*(\d+)\s*)?$")


def parse_sweep(text: str | None) -> tuple[int, int, int] | None:
    """``START-END[:STEP]`` (HPC Pack's /parametric index specification)."""
    if text is None:
        return None
    m = _SWEEP.match(text)
    if not m:
        raise InvalidInput(f"invalid sweep {text!r}: expected START-END[:STEP], e.g. 1-100:2")
    return int(m[1]), int(m[2]), int(m[3] or 1)


def parse_env(pairs) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"invalid --env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def exported_env() -> dict[str, str]:
    """``--export-env``: the submitter's environment without hpcq's settings and secrets."""
    url = settings().redis_url
    password = None
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
    return submitter_environment(secrets=[url, password and unquote(password), password])


def parse_gpus(text) -> str | None:
    """``--gpus`` of a worker: the ids it offers, comma-separated (None when not given)."""
    return None if text is None else ",".join(resources.parse_gpus(text))


def parse_groups(values) -> list[str]:
    return resources.parse_groups(values)


def parse_depends(text: str | None) -> list[str]:
    return [d.strip() for d in (text or "").split(",") if d.strip()]


def join_command(words) -> str:
    """COMMAND words as one ``/bin/sh -c`` string that runs them exactly as the user's shell
    gave them: several words are joined with shell quoting (``-- python3 -c 'print("a  b")'``
    keeps its argument whole), while one word is a shell command line kept verbatim, so
    ``-- 'sort data | uniq > out.txt'`` still pipes and redirects on the worker.  A sweep's
    ``*`` is substituted in either form (inside quotes too)."""
    words = list(words)
    return words[0] if len(words) == 1 else shlex.join(words)
