"""The Lua every script starts with, generated from the declarations of ``schema.py``: its
tables (transitions, what entering a state does, accepted states, key functions) as a preamble,
and its plain names (``S.Queued``, ``F.state``, ``MSG.text``...) inlined as strings into the
scripts' bodies.  Nothing here is a rule: it only writes the schema's rules in Lua."""

from __future__ import annotations

import json
import re

from scheduler.core.schema import (ADD_TASK_TO, CANCEL_JOB_FROM, CANCEL_TASK_FROM, CELERY_ID,
                                   EVENT_FIELDS, EVENT_MESSAGE, EVENTS_KEEP, FIELDS,
                                   FINISH_JOB_FROM, FINISH_TASK_FROM, HISTORY_BYTES, HISTORY_SEP,
                                   JOB_END, JOB_ON_ENTER, JOB_PENDING, JOB_TRANSITIONS, KEYS,
                                   MODIFY_JOB_FROM, OUTCOMES, PREFIX, REQUEUE_JOB_FROM,
                                   REQUEUE_TASK_FROM, START_FIELDS, STATS, STEP_TASKS, TASK_END,
                                   TASK_ON_ENTER, TASK_ON_WORKER, TASK_PENDING, TASK_TRANSITIONS,
                                   JobState, Msg, TaskState, WorkerState, key)


def _set(states) -> str:
    return "{" + ",".join(f"[{json.dumps(str(s))}]=true" for s in sorted(states)) + "}"


def _table(table) -> str:
    return "{" + ",".join(f"[{json.dumps(str(k))}]={_set(v)}" for k, v in table.items()) + "}"


def _effects(table) -> str:
    return "{" + ",".join(f"[{json.dumps(str(k))}]={{{','.join(json.dumps(e) for e in v)}}}"
                          for k, v in table.items()) + "}"


def _names(values) -> str:
    return "{" + ",".join(f"{v}={json.dumps(v)}" for v in values) + "}"


def _keys() -> list[str]:
    out = ["local K = {}"]
    for name, (shape, _, _) in KEYS.items():
        if "{}" in shape:
            head, _, tail = shape.partition("{}")
            tail_lua = f" .. {json.dumps(tail)}" if tail else ""
            out.append(f"function K.{name}(a) return {json.dumps(f'{PREFIX}:{head}')} .. a{tail_lua} end")
        else:
            out.append(f"K.{name} = {json.dumps(key(name))}")
    # every key of one task (or instance) and of one job, for what deletes them all (purge)
    for kind in ("task", "job"):
        names = [n for n, (shape, _, _) in KEYS.items() if shape.startswith(kind + ":{}")]
        out.append(f"local {kind.upper()}_KEYS = {{{','.join(json.dumps(n) for n in names)}}}")
    head, _, tail = CELERY_ID.partition("{}")
    mid, _, end = tail.partition("{}")
    out.append(f"local function celery_id(id, token) return {json.dumps(head)} .. id .. "
               f"{json.dumps(mid)} .. token{' .. ' + json.dumps(end) if end else ''} end")
    return out


def _messages() -> dict[str, str]:
    return {k: v.replace("{}", "%s") for k, v in vars(Msg).items()
            if not k.startswith("_") and isinstance(v, str)}


def lua_names() -> dict[str, dict[str, str]]:
    """The plain name tables of the preamble (S, WS, F, E, ST, O, MSG): name -> its text."""
    return {
        "S": {v: v for v in sorted({*(s.value for s in TaskState), *(s.value for s in JobState)})},
        "WS": {s.value: s.value for s in WorkerState}, "F": {f: f for f in FIELDS},
        "E": {f: f for f in EVENT_FIELDS}, "ST": {f: f for f in STATS}, "O": {o: o for o in OUTCOMES},
        "MSG": _messages(),
    }


_NAME_REF = re.compile(r"\b(S|WS|F|E|ST|O|MSG)\.([A-Za-z_]\w*)")


def inline_names(source: str) -> str:
    """``source`` with every ``S.Queued``, ``F.state``, ``MSG.text``... replaced by its string,
    so that a script need not build those tables on every call (measured: the whole preamble
    costs a call ~30 us of Redis time, most of it the name tables); a name the schema does not
    declare is an error here, not a nil at run time."""
    names = lua_names()

    def literal(m):
        table, name = m.groups()
        if name not in names[table]:
            raise ValueError(f"{table}.{name} is not declared in scheduler/core/schema.py")
        return json.dumps(names[table][name])
    return _NAME_REF.sub(literal, source)


def lua_preamble(inline: bool = False) -> str:
    """The declarations above as Lua source, prepended to every script; with ``inline`` without
    the plain name tables (the scripts then go through ``inline_names``)."""
    names = lua_names()
    tables = [] if inline else [
        f"local S = {_names(names['S'])}",
        f"local WS = {_names(names['WS'])}",
        f"local F = {_names(names['F'])}",
        f"local E = {_names(names['E'])}",
        f"local ST = {_names(names['ST'])}",
    ]
    return "\n".join([
        *tables,
        f"local EV = {{KEEP={int(EVENTS_KEEP)},HISTORY_BYTES={int(HISTORY_BYTES)},"
        f"HISTORY_SEP={json.dumps(HISTORY_SEP)}}}",
        "local EVENT_MESSAGE = {" + ",".join(
            f"[{json.dumps(str(k))}]={{{','.join(json.dumps(f) for f in v)}}}"
            for k, v in EVENT_MESSAGE.items()) + "}",
        *([] if inline else [f"local O = {_names(names['O'])}"]),
        f"local TASK_T = {_table(TASK_TRANSITIONS)}",
        f"local JOB_T = {_table(JOB_TRANSITIONS)}",
        f"local TASK_ON_ENTER = {_effects(TASK_ON_ENTER)}",
        f"local JOB_ON_ENTER = {_effects(JOB_ON_ENTER)}",
        f"local TASK_END = {_set(TASK_END)}",
        f"local JOB_END = {_set(JOB_END)}",
        f"local TASK_ON_WORKER = {_set(TASK_ON_WORKER)}",
        f"local TASK_PENDING = {_set(TASK_PENDING)}",
        f"local JOB_PENDING = {_set(JOB_PENDING)}",
        f"local CANCEL_TASK_FROM = {_set(CANCEL_TASK_FROM)}",
        f"local REQUEUE_TASK_FROM = {_set(REQUEUE_TASK_FROM)}",
        f"local CANCEL_JOB_FROM = {_set(CANCEL_JOB_FROM)}",
        f"local REQUEUE_JOB_FROM = {_set(REQUEUE_JOB_FROM)}",
        f"local FINISH_TASK_FROM = {_set(FINISH_TASK_FROM)}",
        f"local FINISH_JOB_FROM = {_set(FINISH_JOB_FROM)}",
        f"local MODIFY_JOB_FROM = {_set(MODIFY_JOB_FROM)}",
        f"local ADD_TASK_TO = {_set(ADD_TASK_TO)}",
        f"local STEP_TASKS = {int(STEP_TASKS)}",
        "local START_FIELDS = {" + ",".join(json.dumps(f) for f in START_FIELDS) + "}",
        *_keys(),
        *([] if inline else ["local MSG = {" + ",".join(f"{k}={json.dumps(v)}"
                                                      for k, v in names["MSG"].items()) + "}"]),
        "",
    ])
