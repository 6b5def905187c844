"""The Lua scripts as Redis runs them: each assembled from ``lua/`` (the schema's preamble, the
shared helpers, the script), loaded once per connection, called; and their refusals turned into
hpcq's exceptions.

Scripts refuse a step by raising ``HPCQ-<CODE> <message>`` before their first write, so a
refused step changes nothing."""

from __future__ import annotations

import functools
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.core import keys, schema
from scheduler.errors import (HpcqError, InvalidInput, InvalidState, NotFound, PermissionDenied,
                              RedisUnavailable)

_CODES = {"NOTFOUND": NotFound, "STATE": InvalidState, "NOTRERUN": InvalidState,
          "INPUT": InvalidInput, "RETRY": InvalidState, "ILLEGAL": InvalidState,
          "PERM": PermissionDenied}
SCRIPTS = ("create_job", "add_task", "submit", "dispatch", "start", "finish", "cancel_task",
           "cancel_job", "requeue_task", "requeue_job", "lease", "heartbeat", "lose_worker",
           "purge_job", "leave", "new_job", "release", "modify_job", "finish_task", "finish_job", "job_step")


#: The shared helpers every script gets, in this order (each may use the ones before), and
#: those only some scripts need (a script defines every helper it gets on each call).
LIBS = ("lib", "lib_stop", "lib_ops", "lib_attempt", "lib_jobs")
MORE_LIBS = {**{name: ("lib_submit",) for name in ("create_job", "add_task", "submit", "new_job")},
             "dispatch": ("lib_heads",)}


@functools.cache
def script_source(name: str) -> str:
    lua = Path(__file__).with_name("lua")
    libs = LIBS + MORE_LIBS.get(name, ())
    body = "\n".join([*((lua / f"{lib}.lua").read_text() for lib in libs),
                      (lua / f"{name}.lua").read_text()])
    return schema.lua_preamble(inline=True) + "\n" + schema.inline_names(body)


def translate(exc: redis.RedisError) -> HpcqError:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return RedisUnavailable(f"cannot reach Redis: {exc}")
    text = str(exc)
    pos = text.find("HPCQ-")
    if pos >= 0:
        code, _, msg = text[pos + 5:].partition(" ")
        msg = msg.strip()
        return _CODES.get(code, HpcqError)(msg)
    return HpcqError(f"Redis error: {text}")


class Scripts:
    """A Redis client and the scripts loaded on it (``Store`` adds what each step means)."""

    def __init__(self, url: str, client: redis.Redis | None = None, timeout: float = 5.0,
                 single: bool = False):
        self.url = url
        # A bounded socket timeout: a cut link must fail a call, not hang it for minutes.  One
        # immediate retry (a pooled connection Redis dropped), no more: the daemons retry with
        # their own backoff, and redis-py's default (3 retries with backoff) would stall every
        # call for seconds during an outage and could run a script twice.  ``single``: one
        # connection and no pool, for a client used by one thread only.
        self.redis = client or redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout, socket_timeout=timeout,
            socket_keepalive=True, health_check_interval=30, retry=Retry(NoBackoff(), 1),
            single_connection_client=single)
        self._scripts = {name: self.redis.register_script(script_source(name)) for name in SCRIPTS}

    def call(self, name: str, args=()):
        try:
            return self._scripts[name](args=[str(a) for a in args])
        except redis.RedisError as exc:
            raise translate(exc) from None

    def call_then_read(self, name: str, args, task_ids) -> tuple[list, list[dict]]:
        """Script ``name``, then the records of ``task_ids`` as it left them, in one round trip
        (a pipeline: Redis runs the reads right after the script); {} for a record that is none."""
        script = self._scripts[name]
        for loaded in (False, True):
            pipe = self.redis.pipeline(transaction=False)
            pipe.evalsha(script.sha, 0, *[str(a) for a in args])
            for tid in task_ids:
                pipe.hgetall(keys.task(tid))
            try:
                reply, *records = pipe.execute()
                return reply, records
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise HpcqError(f"Redis refused to load the {name} script") from None
                self._do(self.redis.script_load, script.script)   # a restarted Redis forgot it
            except redis.RedisError as exc:
                raise translate(exc) from None
        raise AssertionError("unreachable: the second pass returns or raises")

    def _do(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise translate(exc) from None
