"""What a worker offers and a task asks for (schema.RESOURCES), as text users type and as the
records hold them, checked once here for the CLI, the API and the worker alike.

Placement itself is dispatch.lua's (a unit goes only where all it asks for is free); this
module only reads and checks the figures."""

from __future__ import annotations

import re

from scheduler.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CODES = re.compile(r"^\s*(-?\d+)\s*(?:\.\.\s*(-?\d+)\s*)?$")


def parse_gpus(text) -> list[str]:
    """``--gpus``: a count N (ids 0..N-1) or ids such as ``0,2``; [] for none."""
    if text is None or str(text).strip() == "":
        return []
    text = str(text).strip()
    if "," not in text and text.isdigit():
        return [str(i) for i in range(int(text))]
    ids = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in ids) or len(set(ids)) != len(ids):
        raise InvalidInput(f"invalid --gpus {text!r}: a count (4) or distinct ids (0,2)")
    return ids


def parse_groups(values) -> list[str]:
    """Node group names (repeated or comma-separated), each a plain word."""
    out: list[str] = []
    for value in values or ():
        for name in str(value).split(","):
            name = name.strip()
            if not name:
                continue
            if not _NAME.match(name):
                raise InvalidInput(f"invalid node group {name!r}: letters, digits, _ . : - (up to 64)")
            if name not in out:
                out.append(name)
    return out


def check_group(value) -> str:
    """A task's ``--group``: one group name, or '' for any worker."""
    if value is None or value == "":
        return ""
    groups = parse_groups([value])
    if len(groups) != 1:
        raise InvalidInput(f"invalid group {value!r}: a task asks for one node group")
    return groups[0]


def parse_exit_codes(text) -> str:
    """``--valid-exit-codes 0,10..20`` (HPC Pack's ValidExitCodes) in its canonical text, as
    the finish step reads it; '' when not given (only 0 is success)."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple, set)):
        text = ",".join(str(c) for c in text)
    parts = []
    for part in str(text).split(","):
        m = _CODES.match(part)
        if not m:
            raise InvalidInput(f"invalid exit codes {text!r}: numbers and ranges such as 0,10..20")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise InvalidInput(f"invalid exit code range {part.strip()!r}: its end is below its start")
        parts.append(str(lo) if lo == hi else f"{lo}..{hi}")
    return ",".join(parts)


def exit_code_ok(code: int, codes: str) -> bool:
    """Whether ``code`` counts as success under ``codes`` (parse_exit_codes' text)."""
    if not codes:
        return code == 0
    for part in codes.split(","):
        lo, _, hi = part.partition("..")
        if int(lo) <= code <= int(hi or lo):
            return True
    return False
