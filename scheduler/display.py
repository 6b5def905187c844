"""What Celery's tools (Flower, ``celery events``, a worker's log) show of an attempt.

A message's real args are ``[task id, token]``: all the worker needs, since Redis holds the
spec.  Alone they tell a person watching Flower nothing about what runs, so the dispatcher
gives each message an ``argsrepr`` (Celery's display-only field, sent in the message headers and
in the worker's task-received event, never used to run anything): the hpcq id and the command
as the task will run it (a sweep instance's ``*`` substituted), cut to ``COMMAND_CHARS``.

The dispatch step returns each command's head with the attempts (``lua/lib_heads.lua``), so
showing costs no Redis call of its own, and a task with a megabyte of command no more than one
with a word.  The Redis URL and
password are never part of it (a command that contains the password shows it masked)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from scheduler.core import sweep

#: Characters of a command shown; a longer one ends with "... (N bytes)".
COMMAND_CHARS = 200
#: Bytes of a command template read from Redis (a sweep's ``*`` may lengthen the text).
READ_BYTES = 4 * COMMAND_CHARS



def spec_id(task_id: str) -> str:
    """The record holding a task's spec: a sweep instance ``J.T.I`` has its master's ``J.T``."""
    parts = task_id.split(".")
    return ".".join(parts[:2])


def shorten(command: str, cut: bool = False, size: int | None = None,
            limit: int = COMMAND_CHARS) -> str:
    """``command`` up to ``limit`` characters, then ``... (N bytes)``; ``cut``: Redis returned
    only its head (``size`` bytes in all)."""
    if len(command) <= limit and not cut:
        return command
    return f"{command[:limit]}... ({size or len(command.encode())} bytes)"


def attempt_repr(task_id: str, command: str | None) -> str:
    """``['7.1.2', 'echo frame 02']``: the form Flower shows in its Args column."""
    return repr([task_id, command]) if command is not None else repr([task_id])


class Display:
    """The dispatcher's one instance: ``argsreprs(attempts, heads)`` for a round of dispatches,
    from the command heads the dispatch step returned (``Store.dispatch_shown``)."""

    def __init__(self, secrets=()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def commands(self, task_ids: list[str], heads: dict) -> dict[str, str]:
        """task id -> the command it runs (shortened), from ``heads``: {spec id: (head,
        length, sweep start, sweep step)}."""
        out = {}
        for tid in task_ids:
            got = heads.get(spec_id(tid))
            if got is None:
                continue
            head, size, start, step = (_text(x) for x in got)
            size = int(size or 0)
            cut = size > len(head.encode())
            instance = tid.split(".")[2:]
            if instance and start and step:
                head = sweep.substitute(head, sweep.value(int(start), int(step), int(instance[0])))
            out[tid] = shorten(self.mask(head), cut, size if cut else None)
        return out

    def argsreprs(self, attempts, heads: dict) -> dict[str, str]:
        """task id -> argsrepr for ``(task id, token, celery id)`` tuples; Celery's default
        display for one whose command is unknown: showing must never stop a dispatch."""
        try:
            commands = self.commands([a[0] for a in attempts], heads)
        except Exception:
            return {}
        return {tid: attempt_repr(tid, commands.get(tid)) for tid, *_ in attempts}


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def url_secrets(url: str) -> list[str]:
    """The password of a Redis URL, as written and percent-decoded (what a command may hold)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []
