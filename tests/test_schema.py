"""The rules live in scheduler/core/schema.py only: no Lua script spells a key, a state or an
outcome by hand (they use the generated K, S, WS, O), and every effect the ON_ENTER tables name
exists in lib.lua."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.core import schema

pytestmark = pytest.mark.unit

LUA = Path(schema.__file__).with_name("lua")
NAMES = ({s.value for s in schema.TaskState} | {s.value for s in schema.JobState}
         | {s.value for s in schema.WorkerState} | set(schema.OUTCOMES))
#: Pieces of key shapes ("job:", ":waiting", "queue", ...) that a hand-written key would contain.
KEY_PIECES = {p for shape, _, _ in schema.KEYS.values() for p in shape.split("{}") if ":" in p
              } | {shape for shape, _, _ in schema.KEYS.values() if "{}" not in shape}


def code_of(path: Path) -> list[tuple[int, str]]:
    """(line number, code) with comments taken out."""
    return [(n, line.split("--", 1)[0]) for n, line in enumerate(path.read_text().splitlines(), 1)]


def test_no_state_name_or_key_is_written_by_hand_in_lua():
    found = []
    for path in sorted(LUA.glob("*.lua")):
        for n, code in code_of(path):
            for lit in re.findall(r"'([^']*)'|\"([^\"]*)\"", code):
                text = lit[0] or lit[1]
                if text in NAMES or text.startswith(f"{schema.PREFIX}:") or (
                        ":" in text and any(p in text for p in KEY_PIECES)):
                    found.append(f"{path.name}:{n}: {text!r}")
            if "PREFIX" in code:
                found.append(f"{path.name}:{n}: builds a key from PREFIX")
    assert not found, "written by hand instead of S/WS/O/K from the schema:\n" + "\n".join(found)


def test_every_effect_named_in_the_schema_exists():
    lib = (LUA / "lib.lua").read_text()
    defined = set(re.findall(r"^function EFFECT\.(\w+)\(", lib, re.M))
    named = {e for table in (schema.TASK_ON_ENTER, schema.JOB_ON_ENTER) for v in table.values() for e in v}
    assert named == defined


def test_every_state_says_what_entering_it_does():
    assert set(schema.TASK_ON_ENTER) == set(schema.TaskState)
    assert set(schema.JOB_ON_ENTER) == set(schema.JobState)


def test_keys_are_generated_for_python_and_lua_alike():
    from scheduler.core import keys
    lua = schema.lua_preamble()
    assert keys.task("3.4.5") == "hpcq:task:3.4.5" and keys.worker_tasks("w") == "hpcq:worker:w:tasks"
    for name, (shape, _, _) in schema.KEYS.items():
        assert (f"function K.{name}(a)" if "{}" in shape else f"K.{name} = ") in lua, name
