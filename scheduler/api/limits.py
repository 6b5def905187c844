"""What exec, open() and the kernel accept of a task, checked when a task is specified so that a
task that could never start on any host is refused before anything is written (Linux's limits),
and the text checks every field shares (no NUL, valid UTF-8, shown safely in one line)."""

from __future__ import annotations

import os
import re
from collections import Counter

from scheduler.errors import InvalidInput

# What the worker's ``subprocess.Popen(["/bin/sh", "-c", command], cwd=work_dir, env=env)`` and its
# ``open()`` of stdin/stdout/stderr need, checked when a task is specified so that a task that
# could never start on any host is refused before anything is written (Linux's limits).
#: One ``NAME=VALUE`` environment string, counting its terminating NUL (include/uapi/linux/binfmts.h).
MAX_ARG_STRLEN = 131072
#: A path, counting its terminating NUL (include/uapi/linux/limits.h).
PATH_MAX = 4096
#: One component of a path (one file name).
NAME_MAX = 255
#: A task's whole environment: its NAME=VALUE strings with their NULs and the 8-byte pointer to
#: each.  Half of the usual ARG_MAX (2 MiB), the rest left to the worker's own environment.
MAX_ENV_BYTES = 1 << 20
ENV_POINTER_BYTES = 8
#: A command (it is stored in Redis; the worker runs one too long for an argument from a file).
MAX_COMMAND_BYTES = 16 << 20


def _show(text: str, limit: int = 40) -> str:
    """``text`` as it may appear in a one-line message: as is if short and printable, else
    quoted with escapes (a NUL, a newline) and cut at ``limit`` characters."""
    if len(text) <= limit and text.isprintable():
        return text
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _text(text: str, what: str) -> int:
    """Refuse a NUL byte (no C string can hold one) or a character UTF-8 cannot encode (a lone
    surrogate, e.g. from an argument that was not valid UTF-8: Redis and exec need bytes);
    returns the size in UTF-8 bytes."""
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL byte")
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} contains U+{ord(text[exc.start]):04X}, a lone surrogate that cannot be "
                           f"encoded in UTF-8 (was the text not valid UTF-8?)") from None


_SWEEP_SPECIAL = re.compile(r"[*^][*^]*")  # a quick scan for where substitution acts
_SWEEP_TOKEN = re.compile(r"\^[*^]|\*+")  # sweep.substitute's tokens (no token spans other text)


def _sweep_tokens(text: str) -> tuple[int, Counter]:
    """How ``sweep.substitute`` sees ``text``: its number of ``^*``/``^^`` escapes and how many
    runs of ``*`` it has of each width."""
    escapes, runs = 0, Counter[int]()
    for cluster in _SWEEP_SPECIAL.finditer(text):
        for m in _SWEEP_TOKEN.finditer(cluster.group()):
            if m.group()[0] == "^":
                escapes += 1
            else:
                runs[m.end() - m.start()] += 1
    return escapes, runs


def _substituted_size(size: int, tokens: tuple[int, Counter], val: int) -> int:
    """The UTF-8 size of ``sweep.substitute(text, val)``, from ``text``'s size and tokens: an
    escape becomes one character, a run of n ``*`` the value zero-padded to n digits."""
    escapes, runs = tokens
    digits, sign = len(str(abs(val))), int(val < 0)
    return size - escapes + sum(count * (max(width, digits) + sign - width) for width, count in runs.items())


def _path(value, what: str) -> str | None:
    """A path field as text: None stays None; not empty, no NUL, valid UTF-8."""
    if value is None:
        return None
    if isinstance(value, (bytes, os.PathLike)):
        value = os.fsdecode(value)
    elif not isinstance(value, str):
        raise InvalidInput(f"{what} must be a path, not {value!r}")
    if not value:
        raise InvalidInput(f"{what} is an empty path")
    _text(value, what)
    return value


def _path_limits(path: str, what: str) -> None:
    size = len(path.encode("utf-8"))
    if size >= PATH_MAX:
        raise InvalidInput(f"{what} is {size} bytes; the limit for a path is {PATH_MAX - 1} (PATH_MAX)")
    longest = max(path.split("/"), key=lambda c: len(c.encode("utf-8")))
    size = len(longest.encode("utf-8"))
    if size > NAME_MAX:
        raise InvalidInput(f"{what} has a component of {size} bytes ({_show(longest)}); "
                           f"the limit for one file name is {NAME_MAX} (NAME_MAX)")
