"""Parametric sweeps: instance values and HPC Pack's ``*`` substitution (docs/hpc-pack.md section 4).

A sweep is stored as one record; instances are computed from (start, end, step) on demand so a
sweep of a million instances costs the same to submit as a sweep of one."""

from __future__ import annotations

from typing import overload

from scheduler.errors import InvalidInput

MAX_INSTANCES = 1_000_000


def count(start: int, end: int, step: int) -> int:
    if step < 1 or end < start:
        return 0
    return (end - start) // step + 1


def validate(start: int, end: int, step: int) -> int:
    if step < 1:
        raise InvalidInput(f"sweep increment must be >= 1, not {step}")
    if start > end:
        raise InvalidInput(f"the start value {start} is greater than end value {end}")
    n = count(start, end, step)
    if n > MAX_INSTANCES:
        raise InvalidInput(
            f"the parametric task has {n} sub-tasks; the upper limit on the number of sub-tasks is {MAX_INSTANCES}")
    return n


def value(start: int, step: int, instance: int) -> int:
    """The sweep value of instance ``instance`` (1-based step index)."""
    return start + (instance - 1) * step


@overload
def substitute(template: str, val: int) -> str: ...
@overload
def substitute(template: None, val: int) -> None: ...
def substitute(template: str | None, val: int) -> str | None:
    """Replace each maximal run of n ``*`` with ``val`` zero-padded to n digits.

    ``^*`` is a literal ``*`` and ``^^`` a ``^``; ``^`` before anything else is kept."""
    if template is None:
        return None
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c == "^" and i + 1 < n and template[i + 1] in "*^":
            out.append(template[i + 1])
            i += 2
        elif c == "*":
            j = i
            while j < n and template[j] == "*":
                j += 1
            width = j - i
            text = str(abs(val)).zfill(width)
            out.append(("-" if val < 0 else "") + text)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)
