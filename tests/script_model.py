"""Helpers for tests/test_scripts.py (the fast tier for the Lua scripts): reading the whole
keyspace, the invariant checker, a small rig that drives ``Store`` into given states, and the
randomized operation sequence.

Everything here goes through ``scheduler.core.store.Store``'s public methods (never script
arguments), so a refactor of the scripts that keeps Store's interface keeps these tests."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict

import redis

from scheduler.core import keys

from scheduler.core import states
from scheduler.api.control import band as api_band
from scheduler.errors import HpcqError
from scheduler.api.model import JobSpec, Msg, Priority, TaskSpec, resolve_dependencies
from scheduler.core.schema import cancel_texts
from scheduler.core.states import TaskState
from scheduler.core.store import Store

JOB_ENDED = ("Finished", "Failed", "Canceled")
TASK_STATES = tuple(s.value for s in TaskState)
TASK_END = frozenset(s.value for s in states.TASK_END)
TASK_ON_WORKER = frozenset(s.value for s in states.TASK_ON_WORKER)
PENDING = tuple(s.value for s in states.TASK_PENDING)
BUSY = tuple(TASK_ON_WORKER)
RETRY_CAP = 2


def band(priority) -> int:
    """The queue score band of a job's tasks, as the API computes it."""
    return api_band(Priority.parse(priority))


# --- reading -------------------------------------------------------------------------------------

#: One read-only round trip returning hpcq's keys by type, as JSON (a test helper, not part of
#: the product: the checker itself is the Python below): the keys named in KEYS, or if none,
#: every key matching ARGV[1].  Of a hash only the fields the checker reads are returned (the
#: ``x:<State>`` counts and the fields named in ARGV[3...]); the event stream and the
#: dispatcher's wakeup list (ARGV[2], up to 1000 nudges) are summarized by their length.
_READ = """
local want = {}
for n = 3, #ARGV do want[ARGV[n]] = true end
local names = KEYS
if #names == 0 then names = redis.call('KEYS', ARGV[1]) end
local out = {}
for _, k in ipairs(names) do
  local t = redis.call('TYPE', k)['ok']
  local v = false
  if t == 'hash' then
    v = {}
    local all = redis.call('HGETALL', k)
    local whole = string.sub(k, -5) == ':jobs'      -- a worker's tasks per job: all of it
    for n = 1, #all, 2 do
      local f = all[n]
      if whole or want[f] or string.sub(f, 2, 2) == ':' then
        table.insert(v, f); table.insert(v, all[n + 1])
      end
    end
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'list' and k == ARGV[2] then v = redis.call('LLEN', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'string' then v = redis.call('GET', k)
  elseif t == 'stream' then v = redis.call('XLEN', k)
  end
  table.insert(out, k); table.insert(out, t); table.insert(out, v)
end
return cjson.encode(out)
"""
#: The hash fields the checker (and the sequence's choices) read.
FIELDS = ("state", "node", "token", "nwait", "total", "next", "cut", "pre", "ntasks",
          "fail_on_task_failure", "slots", "worker_pid", "rerunnable", "priority", "failed_sweeps", "failed_sweep",
          "pwait", "held", "finish", "parents", "run_on_parent_failure", "parent_failed", "max_failed_instances", "cut_as",
          "a_cores", "a_memory", "a_gpus", "a_excl", "u_cores", "u_memory")


def _pairs(flat):
    flat = flat if isinstance(flat, list) else []   # cjson encodes an empty table as {}
    return dict(zip(flat[::2], flat[1::2]))


def read_keys(r: redis.Redis, names, into: dict) -> dict:
    """The keys ``names`` into ``into``: hash -> dict (of FIELDS and the ``x:<State>``
    counts), set -> set, zset -> {member: score}, list -> list, string -> str, stream and
    wakeup list -> length; a key that no longer exists is dropped."""
    if names:
        _read(r, sorted(names), into)
    return into


def read_all(r: redis.Redis) -> dict:
    """Every ``hpcq:*`` key (see read_keys)."""
    return _read(r, [], {})


def _read(r: redis.Redis, names: list, snap: dict) -> dict:
    flat = json.loads(r.eval(_READ, len(names), *names, keys.PREFIX + ":*", keys.WAKEUP, *FIELDS))
    for k in range(0, len(flat), 3):
        key, kind, val = flat[k:k + 3]
        if kind == "hash":
            snap[key] = _pairs(val)
        elif kind == "set":
            snap[key] = set(val) if isinstance(val, list) else set()
        elif kind == "zset":
            snap[key] = {m: float(s) for m, s in _pairs(val).items()}
        elif kind == "list" and key != keys.WAKEUP:
            snap[key] = val if isinstance(val, list) else []
        elif kind == "none":
            snap.pop(key, None)
        else:
            snap[key] = val
    return snap


class KeyspaceFeed:
    """The keys each step writes, as Redis itself reports them: keyspace notifications are
    turned on for ``hpcq:*`` while the feed is open (and the setting restored on close).  A
    step's notifications have all arrived once a message published after the step arrives: the
    feed publishes one on a channel of the same pattern (``hpcq:~sync``, no key's name)."""

    def __init__(self, r: redis.Redis):
        self.r = r
        self.saved = r.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        r.config_set("notify-keyspace-events", "KA")
        self.head = f"__keyspace@{r.get_connection_kwargs().get('db', 0)}__:"
        self.sync = self.head + keys.PREFIX + ":~sync"
        self.pubsub = r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(self.head + keys.PREFIX + ":*")
        self.n = 0
        self.written()

    def written(self) -> dict[str, list[str]]:
        """{key: [event, ...]} of every write since the last call."""
        self.n += 1
        mark = str(self.n)
        self.r.publish(self.sync, mark)
        out: dict[str, list[str]] = defaultdict(list)
        deadline = time.monotonic() + 10
        while True:
            # None: nothing yet, or a subscribe confirmation (ignored)
            msg = self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None or msg["type"] != "pmessage":
                if time.monotonic() > deadline:
                    raise AssertionError("the keyspace feed's own message did not come back in 10 s")
                continue
            if msg["channel"] == self.sync:
                if msg["data"] == mark:
                    return out
            else:
                out[msg["channel"][len(self.head):]].append(msg["data"])

    def close(self) -> None:
        try:
            self.pubsub.close()
        finally:
            self.r.config_set("notify-keyspace-events", self.saved)


def dump_keyspace(raw: redis.Redis) -> dict:
    """Every key of the database: (DUMP bytes, PTTL).  ``raw`` must not decode responses."""
    names = sorted(raw.scan_iter(count=1000))
    pipe = raw.pipeline(transaction=False)
    for k in names:
        pipe.dump(k)
        pipe.pttl(k)
    vals = pipe.execute()
    return {k: (vals[2 * n], vals[2 * n + 1]) for n, k in enumerate(names)}


def _i(v) -> int:
    return int(v) if v not in (None, "") else 0


def _shape(key_fn, pattern: str) -> re.Pattern:
    """A regex for the keys ``key_fn`` (from scheduler.core.keys) names, its argument ``pattern``."""
    head, _, tail = key_fn("\0").partition("\0")
    return re.compile(f"^{re.escape(head)}{pattern}{re.escape(tail)}$")


# --- the invariant checker ----------------------------------------------------------------------

def check_invariants(snap: dict) -> list[str]:
    """Everything that must hold between any two steps, recomputed from the keyspace alone
    (the layout of scheduler/core/keys.py).  Returns the violations, empty if none.

    - counts: ``c:<State>`` of every job equals a recount of its tasks (a sweep master by its own
      state), ``i:<State>`` of every sweep master a recount of its instances (see _check_master
      for the instances that have no record yet);
    - places: each unit is in exactly one place for its state: a Queued plain task in the queue
      zset or (depends_on not yet met, nwait > 0) in its job's waiting set; a Queued instance
      once in its master's redo list; a Dispatching/Running/Canceling unit in the task set of
      the worker named by its ``node`` (and of no other), an instance also in ``active``; a
      Failed/Canceled instance in ``ended``; an ended unit in none of the queue, waiting set,
      redo list or worker sets; a sweep with instances to hand out in the queue (or waiting);
    - dependencies: ``nwait`` of each task is the number of ``rdeps`` sets holding it, and an
      ended task holds no dependents;
    - states: a sweep master's state agrees with its instances (master_refresh,
      EFFECT.started, cancel_master), a job's with its tasks (job_refresh, job_started,
      cancel_job and fail_on_task_failure in end_attempt);
    - workers: no worker holds more units than its slots."""
    bad: list[str] = []
    queue = snap.get(keys.QUEUE, {})
    # unit id -> the workers whose task set holds it
    on_sets: dict[str, set[str]] = defaultdict(set)
    wset_re = _shape(keys.worker_tasks, "(.+)")
    for key, members in snap.items():
        m = wset_re.match(key)
        if m:
            w = m.group(1)
            for unit in members:
                on_sets[unit].add(w)
            slots = _i(snap.get(keys.worker(w), {}).get("slots"))
            if len(members) > slots:
                bad.append(f"worker {w} holds {len(members)} units, more than its {slots} slots")
    bad += _check_worker_holds(snap, wset_re)
    seen_units: set[str] = set()
    # instance records by master: {master id: {instance number: record}}
    instances: dict[str, dict[int, dict]] = defaultdict(dict)
    inst_re = _shape(keys.task, r"(\d+\.\d+)\.(\d+)")
    for key, val in snap.items():
        m = inst_re.match(key)
        if m:
            instances[m.group(1)][int(m.group(2))] = val
    job_ids = list(snap.get(keys.JOBS, {}))
    for j in job_ids:
        jh = snap.get(keys.job(j))
        if jh is None:
            bad.append(f"job {j} is listed in {keys.JOBS} but has no record")
            continue
        bad += _check_job(snap, j, jh, queue, on_sets, seen_units, instances)
    for m, recs in instances.items():
        for i in recs:
            if f"{m}.{i}" not in seen_units:
                bad.append(f"instance record {m}.{i} belongs to no sweep")
    for unit, ws in on_sets.items():
        if unit not in seen_units:
            bad.append(f"worker set(s) {sorted(ws)} hold {unit}, which is no task or instance")
    for member in queue:
        if member not in seen_units:
            bad.append(f"the queue holds {member}, which is no task of any job")
    # DISPATCHING: exactly the units Dispatching
    dispatching = {u for u in seen_units
                   if (snap.get(keys.task(u)) or {}).get("state") == "Dispatching"}
    held = set(snap.get(keys.DISPATCHING, {}))
    if held != dispatching:
        bad.append(f"DISPATCHING holds {sorted(held)} but {sorted(dispatching)} are Dispatching")
    return bad


def _check_worker_holds(snap, wset_re) -> list[str]:
    """What each worker's tasks hold, kept beside its task set (lib.lua worker_hold): u_cores
    and u_memory the sums of their a_cores (1 if none) and a_memory, worker_jobs their count per
    job, worker_special those with GPUs or an exclusive flag."""
    bad = []
    names = set(snap.get(keys.WORKERS, {})) | {m.group(1) for k in snap if (m := wset_re.match(k))}
    for w in sorted(names):
        members = snap.get(keys.worker_tasks(w), set())
        recs = {u: snap.get(keys.task(u)) or {} for u in members}
        cores = sum(float(r["a_cores"]) if r.get("a_cores") not in (None, "") else 1.0
                    for r in recs.values())
        memory = sum(_i(r.get("a_memory")) for r in recs.values())
        jobs = Counter(u.split(".")[0] for u in members)
        special = {u for u, r in recs.items() if r.get("a_gpus") or r.get("a_excl")}
        wh = snap.get(keys.worker(w), {})
        got = (float(wh.get("u_cores") or 0), _i(wh.get("u_memory")),
               {k: int(v) for k, v in snap.get(keys.key("worker_jobs", w), {}).items()},
               set(snap.get(keys.key("worker_special", w), set())))
        if got != (cores, memory, dict(jobs), special):
            bad.append(f"worker {w}: holds {got} but its tasks {sorted(members)} make "
                       f"{(cores, memory, dict(jobs), special)}")
    return bad


def _check_job(snap, j, jh, queue, on_sets, seen_units, instances) -> list[str]:
    bad: list[str] = []
    n = _i(jh.get("ntasks"))
    # blocked: parent jobs not ended (pwait: the children sets of its parents that hold it) or
    # a hold (held, with the job in HELD)
    blocked = _i(jh.get("pwait")) > 0 or jh.get("held") == "1"
    delayed = snap.get(keys.DELAYED, {})
    if jh.get("state") in ("Queued", "Running"):
        holding = sum(str(j) in snap.get(keys.job_children(p), set())
                      for p in (jh.get("parents") or "").split(",") if p)
        if holding != _i(jh.get("pwait")):
            bad.append(f"job {j}: pwait={jh.get('pwait')} but {holding} parent(s) hold it")
    if (jh.get("held") == "1") != (str(j) in snap.get(keys.HELD, {})):
        bad.append(f"job {j}: held={jh.get('held')} but in HELD={str(j) in snap.get(keys.HELD, {})}")
    waiting = snap.get(keys.job_waiting(j), set())
    tasks = {}
    for t in range(1, n + 1):
        th = snap.get(keys.task(f"{j}.{t}"))
        if th is None:
            bad.append(f"job {j}: task {j}.{t} (of ntasks={n}) has no record")
            continue
        tasks[t] = th
    # per-state counts on the job hash equal a recount of its tasks (a sweep master counts as
    # one task, by its own state)
    recount = Counter(th.get("state") for th in tasks.values())
    for s in TASK_STATES:
        have = _i(jh.get("c:" + s))
        if have != recount[s]:
            bad.append(f"job {j}: c:{s}={have} but {recount[s]} task(s) are {s}")
    for field in jh:
        if field.startswith("c:") and field[2:] not in TASK_STATES:
            bad.append(f"job {j}: unknown count field {field}")
    for w in waiting:
        if not w.isdigit() or int(w) not in tasks:
            bad.append(f"job {j}: waiting set holds {w!r}, not a task number")
    # dependencies: nwait of each task is the number of rdeps sets that still hold it, and a task
    # that ended has released its dependents (its rdeps set is gone)
    held_by = Counter()
    for t, th in tasks.items():
        rd = snap.get(keys.task_rdeps(f"{j}.{t}"), set())
        if rd and th.get("state") in TASK_END:
            bad.append(f"task {j}.{t} is {th.get('state')} but still holds dependents {sorted(rd)}")
        held_by.update(rd)
    for t, th in tasks.items():
        if _i(th.get("nwait")) != held_by[str(t)]:
            bad.append(f"task {j}.{t}: nwait={th.get('nwait')} but {held_by[str(t)]} unended task(s) hold it")

    for t, th in tasks.items():
        tid = f"{j}.{t}"
        seen_units.add(tid)
        if "total" in th:
            bad += _check_master(snap, j, t, th, queue, waiting, on_sets, seen_units,
                                 instances.get(tid, {}), blocked, delayed)
        else:
            bad += _check_plain(tid, t, th, queue, waiting, on_sets, blocked, delayed)
    marked = [t for t, th in tasks.items() if th.get("failed_sweeps") == "1"]
    if _i(jh.get("failed_sweeps")) != len(marked):
        bad.append(f"job {j}: failed_sweeps={jh.get('failed_sweeps')} but {len(marked)} sweep(s) are marked")
    named = jh.get("failed_sweep")
    if named is not None and named not in {f"{j}.{t}" for t in marked}:
        bad.append(f"job {j}: failed_sweep names {named}, which is not a marked sweep")
    for t in marked:
        th = tasks[t]
        if th.get("state") != "Canceled" or not _i(th.get("i:Failed")):
            bad.append(f"sweep {j}.{t} is marked failed_sweeps but is {th.get('state')} with "
                       f"i:Failed={th.get('i:Failed')}")
    # job_active: exactly the job's units on a worker (what a job cancel stops first)
    on_worker = {u for u in on_sets if u.split(".")[0] == str(j)}
    active = snap.get(keys.key("job_active", j), set())
    if active != on_worker:
        bad.append(f"job {j}: job_active holds {sorted(active)} but {sorted(on_worker)} are on a worker")
    # a store call follows every op it starts to its end (lib_ops.lua)
    if "op" in jh or str(j) in snap.get(keys.JOB_OPS, set()):
        bad.append(f"job {j}: op {jh.get('op')!r} left in progress between steps")
    bad += _check_job_state(j, jh, recount)
    return bad


def _places_on_worker(uid, st, rec, on_sets) -> list[str]:
    ws = on_sets.get(uid, set())
    if st in TASK_ON_WORKER:
        if ws != {rec.get("node")}:
            return [f"{uid} is {st} on node {rec.get('node')!r} but is in worker sets {sorted(ws)}"]
        if not rec.get("token"):
            return [f"{uid} is {st} but has no attempt token"]
    elif ws:
        return [f"{uid} is {st} but is still in worker sets {sorted(ws)}"]
    return []


def _check_plain(tid, t, th, queue, waiting, on_sets, blocked, delayed) -> list[str]:
    bad = []
    st = th.get("state")
    if st not in TASK_STATES:
        return [f"{tid} has unknown state {st!r}"]
    in_q, in_w, in_d = tid in queue, str(t) in waiting, tid in delayed
    if st == "Queued":
        # exactly one place: the queue (dispatchable), the job's waiting set (depends_on, or
        # its job blocked by parents or a hold) or DELAYED (a --retry-delay)
        if in_q + in_w + in_d != 1:
            bad.append(f"{tid} is Queued but in_queue={in_q} in_waiting={in_w} in_delayed={in_d}")
        elif not in_d and in_w != (_i(th.get("nwait")) > 0 or blocked):
            bad.append(f"{tid} is Queued with nwait={th.get('nwait')} (job blocked={blocked}) "
                       f"but in_waiting={in_w}")
    elif in_q or in_w or in_d:
        bad.append(f"{tid} is {st} but in_queue={in_q} in_waiting={in_w} in_delayed={in_d}")
    bad += _places_on_worker(tid, st, th, on_sets)
    return bad


def _check_master(snap, j, t, mh, queue, waiting, on_sets, seen_units, recs, blocked,
                  delayed) -> list[str]:
    """A sweep master and its instances.

    How instances are counted (lib.lua ``materialize``/``implicit_state``, dispatch.lua,
    cancel_task.lua, ``cancel_master``/``requeue_master``): an instance gets a record only when
    dispatched in its turn (dispatch raises ``next`` and materializes it) or when canceled on its
    own before its turn (cancel_task materializes it and counts it in ``pre``).  So
      - every instance 1..next has a record;
      - ``pre`` is the number of records above ``next`` (dispatch lowers it when ``next`` passes
        one of them);
      - an instance above ``next`` without a record waits its turn and is counted in no
        ``i:<State>`` (implicit_state: in the master's state before submission, Queued after:
        the master is in the queue for it);
      - a cancel of the master (cancel_master) cuts that tail off: ``cut`` keeps the old
        ``next``, ``next`` becomes ``total``, and the ``total - cut - pre`` unrecorded instances
        are counted in ``i:Canceled`` without records (implicit_state: Canceled above ``cut``);
        a requeue of the master (requeue_master) undoes it.
    Hence, with e = cut if cut is set else next: records exist for all of 1..e, pre = records
    above e, and i:<S> = records in S, plus (total - e - pre) for Canceled if cut is set."""
    bad = []
    m = f"{j}.{t}"
    st = mh.get("state")
    total, nxt, pre = _i(mh.get("total")), _i(mh.get("next")), _i(mh.get("pre"))
    cut = mh.get("cut")
    eff = _i(cut) if cut is not None else nxt
    for i in recs:
        if not 1 <= i <= total:
            bad.append(f"sweep {m} has a record for instance {i}, outside 1..{total}")
    if not 0 <= nxt <= total:
        bad.append(f"sweep {m}: next={nxt} outside 0..{total}")
    if cut is not None and nxt != total:
        bad.append(f"sweep {m}: cut={cut} but next={nxt} != total={total}")
    missing = [i for i in range(1, eff + 1) if i not in recs]
    if missing:
        bad.append(f"sweep {m}: instances {missing[:5]} at or below next have no record")
    above = sum(1 for i in recs if i > eff)
    if pre != above:
        bad.append(f"sweep {m}: pre={pre} but {above} record(s) above {eff}")
    tail = total - eff - above
    implicit_canceled = tail if cut is not None else 0
    pending_unrecorded = tail if cut is None else 0
    counts = Counter(r.get("state") for r in recs.values())
    counts[mh.get("cut_as") or "Canceled"] += implicit_canceled
    for s in TASK_STATES:
        have = _i(mh.get("i:" + s))
        if have != counts[s]:
            bad.append(f"sweep {m}: i:{s}={have} but the recount is {counts[s]} "
                       f"(records {dict(Counter(r.get('state') for r in recs.values()))}, "
                       f"total={total} next={nxt} cut={cut} pre={pre})")

    active = snap.get(keys.sweep_active(m), set())
    redo = snap.get(keys.sweep_redo(m), [])
    ended = snap.get(keys.sweep_ended(m), set())
    for x in set(active) | set(redo) | set(ended):
        if not x.isdigit() or int(x) not in recs:
            bad.append(f"sweep {m}: active/redo/ended name {x!r}, which has no record")
    for i, rec in recs.items():
        uid = f"{m}.{i}"
        seen_units.add(uid)
        ist = rec.get("state")
        place = (str(i) in active, redo.count(str(i)), str(i) in ended)
        queued = (False, 0, False) if uid in delayed else (False, 1, False)
        want = {"Queued": queued, "Finished": (False, 0, False),
                "Failed": (False, 0, True), "Canceled": (False, 0, True)}.get(
            ist, (True, 0, False) if ist in TASK_ON_WORKER else None)
        if want is None:
            bad.append(f"instance {uid} has unexpected state {ist!r}")
        elif place != want:
            bad.append(f"instance {uid} is {ist} but (in active, times in redo, in ended) = "
                       f"{place}, expected {want}")
        bad += _places_on_worker(uid, ist, rec, on_sets)
    if on_sets.get(m):
        bad.append(f"sweep master {m} is itself in worker sets {sorted(on_sets[m])}")

    # where the master is: the queue (it has instances to hand out), the waiting set
    # (depends_on), or neither.  Dispatch drops a master from the queue lazily: one whose
    # remaining instances were all canceled on their own may stay there with nothing to hand
    # out (dispatch then walks past their records and removes it), so only a master with
    # something to hand out (an instance in redo, or one above next without a record) must not
    # be in the queue unless it is Queued or Running.
    in_q, in_w = m in queue, str(t) in waiting
    nwait = _i(mh.get("nwait"))
    has_work = bool(redo) or pending_unrecorded > 0
    if in_q and in_w:
        bad.append(f"sweep {m} is both in the queue and in the waiting set")
    if in_w and not ((st == "Queued" and nwait > 0) or (st in ("Queued", "Running") and blocked)):
        bad.append(f"sweep {m} is {st} with nwait={nwait} (job blocked={blocked}) but in the waiting set")
    if in_q and has_work and not (st in ("Queued", "Running") and nwait <= 0 and not blocked):
        bad.append(f"sweep {m} is {st} with nwait={nwait}, has instances to hand out "
                   f"(redo={redo}, {pending_unrecorded} not yet dispatched) and is in the queue")
    if st in ("Queued", "Running") and has_work and not (in_q or in_w):
        bad.append(f"sweep {m} is {st} with instances to hand out but neither queued nor waiting")

    # the master's state agrees with its instances (master_refresh, start_unit, cancel_master)
    n_end = counts["Finished"] + counts["Failed"] + counts["Canceled"]
    n_run = counts["Running"] + counts["Canceling"]
    live = sum(counts[s] for s in ("Queued", *TASK_ON_WORKER))
    if st in ("Queued", "Running") and n_end >= total:
        bad.append(f"sweep {m} is {st} but all {total} instances ended")
    if st == "Queued" and n_run:
        bad.append(f"sweep {m} is Queued but {n_run} instance(s) run")
    # it fails once more instances failed than it allows (max_failed_instances), unless finished
    allowed = _i(mh.get("max_failed_instances"))
    if st == "Finished" and (n_end != total or (counts["Failed"] > allowed and mh.get("finish") != "1")):
        bad.append(f"sweep {m} is Finished but ended={n_end}/{total}, failed={counts['Failed']}")
    if st == "Failed" and (n_end != total or counts["Failed"] <= allowed):
        bad.append(f"sweep {m} is Failed but ended={n_end}/{total}, failed={counts['Failed']}")
    if st == "Canceling" and not (active or redo):
        bad.append(f"sweep {m} is Canceling with nothing active or queued again")
    if st == "Canceling" and pending_unrecorded:
        bad.append(f"sweep {m} is Canceling but {pending_unrecorded} instance(s) still wait their turn")
    if st == "Canceled" and live:
        bad.append(f"sweep {m} is Canceled but {live} instance(s) are queued or on a worker")
    if st == "Canceled" and pending_unrecorded:
        bad.append(f"sweep {m} is Canceled but {pending_unrecorded} instance(s) were not cut off "
                   f"(implicitly Queued: total={total} next={nxt} pre={pre}, no cut)")
    if st in ("Configuring", "Submitted", "Validating") and (live or nxt):
        bad.append(f"sweep {m} is {st} but instances were dispatched (next={nxt}, live={live})")
    return bad


def _check_job_state(j, jh, c) -> list[str]:
    """The job's state agrees with its tasks (lib.lua job_refresh, job_started, cancel_job,
    end_attempt's fail_on_task_failure)."""
    st = jh.get("state")
    pending = sum(c[s] for s in PENDING)
    busy = sum(c[s] for s in BUSY)
    fotf = jh.get("fail_on_task_failure") == "1"
    n = sum(c.values())
    # sweeps canceled while instances ran count against the job as Failed tasks do
    failed = c["Failed"] + _i(jh.get("failed_sweeps"))
    why = None
    if st == "Configuring":
        if c["Configuring"] + c["Canceled"] != n:
            why = "a Configuring job's tasks are all Configuring or Canceled"
    elif st in ("Submitted", "Validating"):
        why = f"no step leaves a job {st} (submit passes through it)"
    elif st == "Queued":
        if pending + busy == 0:
            why = "a Queued job has something left to run"
        elif c["Running"]:
            why = "a Queued job has no Running task (the first one to run makes it Running)"
    elif st == "Running":
        if pending + busy == 0:
            why = "a Running job has something left to run"
    elif st == "Finished":
        if pending + busy or (failed and jh.get("finish") != "1"):
            why = "a Finished job has nothing left to run and no Failed task (or failed sweep)"
    elif st == "Failed":
        if pending or c["Dispatching"] or c["Running"]:
            why = "a Failed job has nothing queued or running (at most tasks still Canceling)"
        elif not fotf and not jh.get("parent_failed") and (busy or not failed):
            why = ("a Failed job (not fail_on_task_failure, no failed parent) has no busy task "
                   "and a Failed one")
    elif st == "Canceling":
        if pending or not busy:
            why = "a Canceling job has nothing queued and something still stopping"
    elif st == "Canceled":
        if pending + busy:
            why = "a Canceled job has nothing left to run"
    else:
        why = f"unknown job state {st!r}"
    if why:
        return [f"job {j} is {st}: {why}; task counts {dict(+c)}"]
    return []


# --- driving Store into given states ------------------------------------------------------------

class Rig:
    """Short-hands over ``Store`` for setting up states; ``w1`` is a worker with 8 slots."""

    def __init__(self, store: Store):
        self.store = store
        self.pid = 1000

    def worker(self, name="w1", slots=8, held=(), state="online", grace=1000, info=None):
        return self.store.heartbeat(name, slots, keys.worker_queue(name), info or {"pid": 1},
                                    list(held), grace, RETRY_CAP, state)

    def job(self, *tasks, submit=True, fail_on_task_failure=False, priority="Normal") -> int:
        """A job of ``tasks`` (TaskSpec or dicts of TaskSpec fields); submitted unless told."""
        jid = self.store.create_job(JobSpec(name="t", priority=priority,
                                            fail_on_task_failure=fail_on_task_failure).to_record())
        specs = [t if isinstance(t, TaskSpec) else TaskSpec(**{"command": "true", **t})
                 for t in (tasks or ({},))]
        for s in specs:
            self.store.add_task(jid, s.to_record())
        if submit:
            self.store.submit(jid, band(priority), resolve_dependencies(specs))
        return jid

    def dispatch(self, worker="w1", want=1 << 20) -> dict[str, str]:
        """Dispatches to ``worker``; {unit id: token}."""
        return {uid: tok for uid, tok, _ in self.store.dispatch(worker, want)}

    def start(self, uid, token, pid=None):
        ok, _, _ = self.store.start(uid, token, pid or self.pid)
        assert ok, f"start {uid} refused"

    def run(self, worker="w1") -> dict[str, str]:
        """Dispatch everything dispatchable to ``worker`` and start it."""
        got = self.dispatch(worker)
        for uid, tok in got.items():
            self.start(uid, tok)
        return got

    def finish(self, uid, token, code=0, outcome="exit"):
        err = "" if code == 0 else Msg.exit_code.format(code)
        return self.store.finish(uid, token, outcome, code if outcome == "exit" else None, err,
                                 retry_cap=RETRY_CAP)

    def complete(self, worker="w1", code=0) -> dict[str, str]:
        """Run everything dispatchable to ``worker`` to its end with ``code``."""
        got = self.run(worker)
        for uid, tok in got.items():
            self.finish(uid, tok, code)
        return got

    # the user operations, with the texts the API (scheduler/api/client.py) gives them
    def cancel_task(self, uid, message="", force=False, mode="user", token=""):
        return self.store.cancel_task(uid, *cancel_texts(message), force=force, mode=mode,
                                      token=token)

    def cancel_job(self, jid, message="", force=False, graceful=False):
        return self.store.cancel_job(jid, *cancel_texts(message), message, force=force,
                                     graceful=graceful)

    def requeue_task(self, uid):
        return self.store.requeue_task(uid, cancel_texts(Msg.requeued)[1])

    def requeue_job(self, jid):
        return self.store.requeue_job(jid, cancel_texts(Msg.requeued)[1])

    def lose_worker(self, name="w1"):
        return self.store.lose_worker(name, Msg.worker_lost.format(name),
                                      Msg.never_started.format(name), RETRY_CAP)


# --- the randomized sequence ------------------------------------------------------------------

class InvariantViolation(AssertionError):
    pass


class Sequence:
    """Random operations, valid and invalid, through ``Store``; the invariants after every step.

    The driver keeps only what a real worker would know (the attempts it was handed and which
    of them it started); whether an operation is accepted is Redis' business, and the few
    answers that can be predicted from the state just read are checked too (a start or finish
    with the current token of a unit in the right state succeeds, anything else is refused, and
    any refusal wrote nothing)."""

    MAX_JOBS = 14
    WORKERS = {"w1": 3, "w2": 2, "w3": 1}

    def __init__(self, store: Store, r: redis.Redis, seed: int):
        self.store, self.r, self.seed = store, r, seed
        self.rng = random.Random(seed)
        self.jobs: dict[int, list[TaskSpec]] = {}
        self.held: dict[str, dict[str, str]] = {w: {} for w in self.WORKERS}
        self.pid = {w: 1 for w in self.WORKERS}
        self.old: list[tuple[str, str]] = []
        self.history: list[str] = []
        self.step = 0
        self.stats: Counter = Counter()
        self.snap: dict = {}

    # -- helpers
    def beat(self, w, held, grace=1000.0, state="online"):
        return self.store.heartbeat(w, self.WORKERS[w], keys.worker_queue(w),
                                    {"pid": self.pid[w]}, held, grace, RETRY_CAP, state)

    def _retire(self, w, uid):
        tok = self.held[w].pop(uid, None)
        if tok:
            self.old.append((uid, tok))
            del self.old[:-40]

    def pick_job(self):
        """Mostly a job that has not ended (as of the last check), sometimes any."""
        ids = sorted(self.jobs)
        if not ids:
            return None
        live = [j for j in ids if self.snap.get(keys.job(j), {}).get("state") not in JOB_ENDED]
        return self.rng.choice(live if live and self.rng.random() < 0.75 else ids)

    def pick_unit(self):
        """A task, sweep master or instance id: mostly ones a worker holds or existing ones,
        sometimes one that does not exist."""
        rng = self.rng
        x = rng.random()
        if x < 0.3:
            held = [u for h in self.held.values() for u in h]
            if held:
                return rng.choice(held)
        if x < 0.04 or not self.jobs:
            return rng.choice(["999.1", "1.99", "999.1.1"])
        if x < 0.7:
            live = sorted(k.removeprefix(keys.task("")) for k, v in self.snap.items()
                          if k.startswith(keys.task("")) and isinstance(v, dict)
                          and v.get("state") not in (None, *TASK_END))
            if live:
                return rng.choice(live)
        j = self.pick_job()
        specs = self.jobs[j]
        t = rng.randint(1, len(specs))
        spec = specs[t - 1]
        if spec.sweep and rng.random() < 0.7:
            return f"{j}.{t}.{rng.randint(1, spec.instances + (1 if rng.random() < 0.05 else 0))}"
        if not spec.sweep and rng.random() < 0.03:
            return f"{j}.{t}.1"
        return f"{j}.{t}"

    def new_task(self, specs) -> TaskSpec:
        rng = self.rng
        k = len(specs) + 1
        earlier = [s.name for s in specs]
        deps = rng.sample(earlier, min(len(earlier), rng.choice([0, 0, 1, 1, 2])))
        sweep = None
        if rng.random() < 0.35:
            sweep = rng.choice([(1, rng.randint(1, 5), 1), (0, 8, 2)])
        retry = rng.choice([0, 0, 0, 1, 2])
        return TaskSpec(command="true", name=f"t{k}", depends_on=deps,
                        is_rerunnable=rng.random() < 0.8, sweep=sweep, retry=retry,
                        retry_delay=rng.choice([0, 0, 5]) if retry else 0,
                        max_failed_instances=rng.choice([None, 1]) if sweep else None)

    # -- operations: each returns a short text for the history
    def op_create(self):
        rng = self.rng
        if len(self.jobs) >= self.MAX_JOBS:
            return self.op_requeue_job()
        fotf = rng.random() < 0.25
        prio = rng.choice(["Normal", "Normal", "AboveNormal", "Lowest"])
        self.desc = "create"
        parents = rng.sample(sorted(self.jobs), min(len(self.jobs), rng.choice([0, 0, 0, 1, 2])))
        hold = time.time() + rng.choice([-5, 1000]) if rng.random() < 0.15 else None
        jid = self.store.create_job(JobSpec(name="r", priority=prio, fail_on_task_failure=fotf,
                                            depends_on_job=parents, hold_until=hold,
                                            run_on_parent_failure=rng.random() < 0.3).to_record())
        specs = []
        for _ in range(rng.randint(1, 4)):
            spec = self.new_task(specs)
            self.store.add_task(jid, spec.to_record())
            specs.append(spec)
        self.jobs[jid] = specs
        text = f"create job {jid} fotf={int(fotf)} parents={parents} hold={hold and int(hold - time.time())} tasks=" + "; ".join(
            f"{s.name}{'[sweep %d]' % s.instances if s.sweep else ''}"
            f"{'' if s.is_rerunnable else ' !rerun'}{' <-' + ','.join(s.depends_on) if s.depends_on else ''}"
            for s in specs)
        if rng.random() < 0.8:
            self.store.submit(jid, band(prio), resolve_dependencies(specs))
            text += " + submit"
        return text

    def op_submit(self):
        j = self.pick_job()
        if j is None:
            return self.op_create()
        prio = self.snap.get(keys.job(j), {}).get("priority", "Normal")
        self.desc = f"submit {j}"
        self.store.submit(j, band(prio), resolve_dependencies(self.jobs[j]))
        return f"submit {j}"

    def op_add_task(self):
        j = self.pick_job()
        if j is None:
            return self.op_create()
        spec = self.new_task(self.jobs[j])
        self.desc = f"add_task {j} {spec.name}{' sweep' if spec.sweep else ''}"
        t = self.store.add_task(j, spec.to_record())
        self.jobs[j].append(spec)
        return f"add_task {j} -> {j}.{t} {spec.name}{' sweep' if spec.sweep else ''}"

    def op_dispatch(self):
        w = self.rng.choice(list(self.WORKERS))
        want = self.rng.randint(1, 3)
        self.desc = f"dispatch {w} {want}"
        got = self.store.dispatch(w, want)
        for uid, tok, _ in got:
            self.held[w][uid] = tok
        return f"dispatch {w} -> {[u for u, _, _ in got]}"

    def revoked(self, revokes):
        """What the worker does with the revokes a step published: a 'discard' drops a message
        not yet started (the attempt is no longer held); a 'terminate' stops the command, whose
        end the worker then records (a later finish step)."""
        for cid, mode in revokes:
            if mode != "discard" or not cid.startswith("hpcq-"):
                continue
            uid, _, tok = cid[5:].rpartition("-")
            for w, held in self.held.items():
                if held.get(uid) == tok:
                    self._retire(w, uid)

    def _held_attempt(self):
        choices = [(w, u, t) for w, h in self.held.items() for u, t in h.items()]
        return self.rng.choice(choices) if choices else None

    def op_start(self):
        pick = self._held_attempt()
        if pick is None or self.rng.random() < 0.05:
            if not self.old or pick is None and self.rng.random() < 0.8:
                return self.op_dispatch()
            uid, tok = self.rng.choice(self.old)
            w = "?"
        else:
            w, uid, tok = pick
        rec = self.snap.get(keys.task(uid), {})      # the state just before this step
        pid = self.pid.get(w, 0)
        self.desc = f"start {uid}@{tok} on {w}"
        ok, _, why = self.store.start(uid, tok, pid)
        expect = rec.get("token") == tok and (rec.get("state") == "Dispatching" or (
            rec.get("state") == "Running" and rec.get("worker_pid") == str(pid)))
        if ok != expect:
            raise InvariantViolation(f"start {uid} token {tok}: answered ok={ok} ({why}) but the "
                                     f"record was {rec.get('state')} with token {rec.get('token')}")
        self.refused = not ok
        return f"start {uid}@{tok} on {w} -> {'ok' if ok else 'no: ' + str(why)}"

    def op_finish(self, outcome=None):
        rng = self.rng
        pick = self._held_attempt()
        if pick is None or rng.random() < 0.05:
            if not self.old or pick is None and rng.random() < 0.8:
                return self.op_dispatch()
            (uid, tok), w = rng.choice(self.old), None
        else:
            w, uid, tok = pick
        outcome = outcome or ("lost" if rng.random() < 0.15 else "exit")
        code = rng.choice([0, 0, 0, 1, -9]) if outcome == "exit" else None
        err = ("" if code == 0 else Msg.exit_code.format(code)) if outcome == "exit" else \
            rng.choice([Msg.worker_lost, Msg.never_started, Msg.supervisor_died]).format(w or "w1", "x")
        drain = outcome == "lost" and w is not None and rng.random() < 0.1
        rec = self.snap.get(keys.task(uid), {})
        self.desc = f"finish {uid}@{tok} {outcome} code={code}{' drain' if drain else ''}"
        state, msg, revokes = self.store.finish(uid, tok, outcome, code, err, "", 0, 0, 0,
                                                RETRY_CAP, drain)
        # Store.finish answers (end state, message, revokes), or (current state, "", []) for a
        # stale attempt: which one it was is known from the record read just before.
        recorded = rec.get("token") == tok and rec.get("state") in TASK_ON_WORKER
        if recorded and state not in ("Finished", "Failed", "Queued"):
            raise InvariantViolation(f"finish {uid} token {tok} of a {rec.get('state')} attempt "
                                     f"answered {state!r}")
        self.refused = not recorded
        self.revoked(revokes)
        if w:
            self._retire(w, uid)
            if drain:   # the worker shut down: it holds nothing now, and restarts as a new life
                for u in list(self.held[w]):
                    self._retire(w, u)
                self.pid[w] += 1
        return (f"finish {uid}@{tok} {outcome} code={code}{' drain' if drain else ''} "
                f"-> {state if recorded else 'stale (' + state + ')'} {len(revokes)} revoke(s)")

    def op_cancel_task(self):
        rng = self.rng
        uid = self.pick_unit()
        msg = rng.choice(["", "stop", "x" * 20])
        if rng.random() < 0.15:
            tok = self.snap.get(keys.task(uid), {}).get("token", "") if rng.random() < 0.6 else "1"
            self.desc = f"revoke {uid}@{tok}"
            st, rev = self.store.cancel_task(uid, *cancel_texts(""), mode="revoke", token=tok)
            self.revoked(rev)
            return f"revoke {uid}@{tok} -> {st} {len(rev)}"
        force = rng.random() < 0.2
        self.desc = f"cancel_task {uid} force={int(force)}"
        st, rev = self.store.cancel_task(uid, *cancel_texts(msg), force=force)
        self.revoked(rev)
        return f"cancel_task {uid} force={int(force)} -> {st} {len(rev)}"

    def op_cancel_job(self):
        rng = self.rng
        j = self.pick_job() or 999
        graceful = rng.random() < 0.3
        force = not graceful and rng.random() < 0.2
        self.desc = f"cancel_job {j} graceful={int(graceful)} force={int(force)}"
        st, rev = self.store.cancel_job(j, *cancel_texts("j"), "j", force=force, graceful=graceful)
        self.revoked(rev)
        return f"cancel_job {j} graceful={int(graceful)} force={int(force)} -> {st} {len(rev)}"

    def op_requeue_task(self):
        uid = self.pick_unit()
        self.desc = f"requeue_task {uid}"
        st, rev = self.store.requeue_task(uid, cancel_texts(Msg.requeued)[1])
        self.revoked(rev)
        return f"requeue_task {uid} -> {st} {len(rev)}"

    def op_requeue_job(self):
        j = self.pick_job() or 999
        self.desc = f"requeue_job {j}"
        st, rev = self.store.requeue_job(j, cancel_texts(Msg.requeued)[1])
        self.revoked(rev)
        return f"requeue_job {j} -> {st} {len(rev)}"

    def op_finish_task(self):
        uid = self.pick_unit()
        self.desc = f"finish_task {uid}"
        st, rev = self.store.finish_task(uid, "done")
        self.revoked(rev)
        return f"finish_task {uid} -> {st} {len(rev)}"

    def op_finish_job(self):
        j = self.pick_job() or 999
        self.desc = f"finish_job {j}"
        st, rev = self.store.finish_job(j, "done")
        self.revoked(rev)
        return f"finish_job {j} -> {st} {len(rev)}"

    def op_modify(self):
        rng = self.rng
        j = self.pick_job() or 999
        hold = rng.choice(["", "0", f"{time.time() + 1000:.6f}", f"{time.time() - 5:.6f}"])
        prio = rng.choice(["", "", "Highest", "Lowest"])
        self.desc = f"modify {j} hold={hold[:4]} prio={prio}"
        st = self.store.modify_job(j, hold, prio, band(prio) if prio else 0)
        return f"modify {j} hold={hold[:4]} prio={prio} -> {st}"

    def op_release(self):
        self.desc = "release"
        if self.rng.random() < 0.5:   # as if the delays and holds had passed
            for k in (keys.DELAYED, keys.HELD):
                for m in self.r.zrange(k, 0, -1):
                    self.r.zadd(k, {m: 1})
        return f"release -> {self.store.release()}"

    def op_lose_worker(self):
        w = self.rng.choice(list(self.WORKERS))
        self.desc = f"lose_worker {w}"
        on = sorted(self.r.smembers(keys.worker_tasks(w)))
        started = {r["celery_id"]: r.get("cancel_error") for r in self.store.tasks(on)
                   if r.get("state") in ("Running", "Canceling")}
        rev, ended = self.store.lose_worker(w, Msg.worker_lost.format(w),
                                            Msg.never_started.format(w), RETRY_CAP)
        self.revoked(rev)
        self.check_ended(w, ended, started)
        if self.rng.random() < 0.5:      # it really died: a new life holds nothing
            for u in list(self.held[w]):
                self._retire(w, u)
            self.pid[w] += 1
            how = "dead"
        else:                            # cut off: it still holds its attempts
            how = "cut off"
        return f"lose_worker {w} ({how}) -> {len(rev)} revoke(s)"

    def check_ended(self, w, ended, started) -> None:
        """What Flower is told of a lost worker: each attempt that had started there (Celery
        saw it start), once, with a reason: the one recorded, or the cancel it was stopping for."""
        if {cid for cid, _ in ended} != set(started) or len(ended) != len(started):
            raise InvariantViolation(f"lose_worker {w}: ended {ended}, started {sorted(started)}")
        for cid, reason in ended:
            rec = self.store.task(cid[5:].rpartition("-")[0]) or {}
            if not reason or reason not in (rec.get("error"), rec.get("last_error"), started[cid]):
                raise InvariantViolation(f"lose_worker {w}: {cid}'s reason {reason!r} is not "
                                         f"what was recorded ({rec.get('error')!r}, "
                                         f"{rec.get('last_error')!r}, {started[cid]!r})")

    def op_heartbeat(self):
        rng = self.rng
        w = rng.choice(list(self.WORKERS))
        held = list(self.held[w].items())
        note = ""
        if held and rng.random() < 0.15:     # the worker's registry lost one attempt
            uid, _ = rng.choice(held)
            self._retire(w, uid)
            held = list(self.held[w].items())
            note = f" (forgot {uid})"
        if rng.random() < 0.1 and self.old:   # it still runs an attempt that is not its own
            held.append(rng.choice(self.old))
            note += f" (+stale {held[-1][0]})"
        grace = rng.choice([0.0, 1000.0])
        self.desc = f"heartbeat {w} held={len(held)}{note} grace={grace:g}"
        stale, rev = self.beat(w, held, grace)
        self.revoked(rev)
        for uid, tok in stale:          # the worker kills what is no longer its own
            if self.held[w].get(uid) == tok:
                self._retire(w, uid)
        return f"heartbeat {w} held={len(held)}{note} grace={grace:g} -> stale={[u for u, _ in stale]} {len(rev)} revoke(s)"

    OPS = (("dispatch", 14), ("start", 16), ("finish", 18), ("cancel_task", 8), ("cancel_job", 2),
           ("requeue_task", 7), ("requeue_job", 2), ("create", 3), ("submit", 2),
           ("add_task", 2), ("lose_worker", 2), ("heartbeat", 8), ("finish_task", 2),
           ("finish_job", 1), ("modify", 2), ("release", 2))

    #: Every this many steps the snapshot kept from the keyspace feed is compared with a full
    #: read (a missed notification would show there).
    FULL_READ_EVERY = 250

    def run(self, steps: int) -> None:
        feed = KeyspaceFeed(self.r)
        try:
            self._run(steps, feed)
        finally:
            feed.close()

    def _run(self, steps: int, feed: KeyspaceFeed) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for w in self.WORKERS:
            self.beat(w, [])
        for _ in range(4):
            self.history.append((0, self.op_create()))
        feed.written()
        self.snap = read_all(self.r)
        for self.step in range(1, steps + 1):
            name = self.rng.choices(names, weights)[0]
            self.refused = False
            self.desc = name
            try:
                text = getattr(self, "op_" + name)()
            except HpcqError as exc:
                text = f"{self.desc} -> refused {type(exc).__name__}: {exc}"
                self.refused = True
                # a refusal is one of the scripts' own checks (HPCQ-<code> before any write); a
                # Lua runtime error or a move enter() refuses midway (HPCQ-BUG) is a broken script
                if type(exc) is HpcqError or "cannot go from" in str(exc):
                    self.history.append((self.step, text))
                    written = feed.written()
                    self.fail([f"the script failed: {exc}"] +
                              ([f"after writing {sorted(written)}"] if written else []), text)
            except InvariantViolation as exc:
                self.fail([str(exc)], f"{name} (its answer)")
            self.history.append((self.step, text))
            self.stats[name] += 1
            self.stats["refused"] += self.refused
            written = feed.written()
            if self.refused and written:
                self.fail([f"a refused step wrote: {dict(written)}"], text)
            if text.startswith("finish ") and not self.refused and not written:
                self.fail(["a finish with the current token wrote nothing"], text)
            read_keys(self.r, written, into=self.snap)
            if self.step % self.FULL_READ_EVERY == 0:
                full = read_all(self.r)
                if full != self.snap:
                    diff = sorted(k for k in set(full) | set(self.snap)
                                  if full.get(k) != self.snap.get(k))
                    raise AssertionError(f"the keyspace feed missed writes to {diff[:10]}")
            bad = check_invariants(self.snap)
            if bad:
                self.fail(bad, text)

    def fail(self, bad, text):
        tail = "\n".join(f"  {n:5d} {h}" for n, h in self.history[-40:])
        raise InvariantViolation(
            f"seed={self.seed} step={self.step}: after {text!r}:\n  " + "\n  ".join(bad[:12]) +
            f"\nlast operations:\n{tail}\n(reproduce: HPCQ_SCRIPTS_SEED={self.seed} "
            f"HPCQ_SCRIPTS_STEPS={self.step} python -m pytest -q tests/test_scripts.py -k sequence;"
            f" the operations follow from the seed, but Redis orders a set's members differently "
            f"in each server process and some scripts walk sets, so a replay may drift)")

