"""The invariants (listed in bench/chaos/__init__.py), checked on a run's record: each one
counts what it looked at and lists what broke it, so a run with zero violations has also shown
how much was checked.  tests/test_chaos.py feeds it made-up records to prove each one bites."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psutil

from bench.chaos.config import JOB_END, PRE_QUEUE, TASK_END, TASK_STATES


def failure_kind(error: str) -> str:
    """A Failed task's error message, reduced to its kind."""
    for needle, kind in (("not rerun again", "rerun cap"), ("canceled by the user during", "canceled while running"),
                         ("exited with code", "exit code"), ("killed by signal", "killed by signal"),
                         ("became unreachable", "worker lost"), ("supervising the task", "pool process died"),
                         ("was stopped while", "worker stopped"), ("no longer runs", "unlisted"),
                         ("failed because task", "job failed")):
        if needle.lower() in error.lower():
            return kind
    return error[:60] or "(no message)"


@dataclass
class Invariant:
    title: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.violations.append(what)


class Checks:
    """Part of ``Chaos`` (bench/chaos/run.py): the invariants over the record."""

    def inv(self, key: str, title: str) -> Invariant:
        if key not in self.invariants:
            self.invariants[key] = Invariant(title)
        return self.invariants[key]

    def check_all(self) -> None:
        i1 = self.inv("1", "one end state per task/instance, agreeing with its history; jobs final")
        i2a = self.inv("2", "canceled before it started: its command never ran")
        i2b = self.inv("2b", "no command started without its attempt recorded Running")
        i3a = self.inv("3", "no two attempts both record: each ends once, Finished at most once")
        i3b = self.inv("3b", "a Finished result is its recorded attempt's (markers, output, value)")
        i4 = self.inv("4", "no task process alive once settled, nothing of the run after stop")
        i5 = self.inv("5", "per-state counts (job c:<State>, sweep i:<State>) equal a recount")
        i6 = self.inv("6", "job and sweep-master states agree with their tasks/instances")
        events = self.events.task_events
        job_events = self.events.job_events
        marks = self.read_marks()
        totals = Counter()
        attempts = Counter()

        # units: (id, record or None, implied state, spec) for plain tasks and instances
        units = []
        masters = []
        for j in self.submitted:
            for t, tp in enumerate(j.tasks, 1):
                tid = f"{j.job_id}.{t}"
                rec = self.task_recs.get(tid) or {}
                if tp.sweep:
                    masters.append((j, t, tp, tid, rec))
                    for i in range(1, tp.units + 1):
                        iid = f"{tid}.{i}"
                        irec = self.inst_recs.get(iid) or {}
                        if irec:
                            state = irec.get("state")
                        elif "cut" in rec and i > int(rec["cut"]):
                            state = "Canceled"
                        else:
                            state = rec.get("state") if rec.get("state") in PRE_QUEUE else "Queued"
                        units.append((iid, irec or None, state, tp, i))
                else:
                    units.append((tid, rec or None, rec.get("state"), tp, None))

        for uid, rec, state, tp, inst in units:
            ev = events.get(uid, [])
            mk = marks.get(uid, {"starts": Counter(), "ends": Counter(), "values": {}})
            totals[state] += 1
            reruns = int((rec or {}).get("auto_requeue_count") or 0)
            if reruns:
                self.reruns.append((reruns, uid, (rec or {}).get("last_error", ""),
                                    (rec or {}).get("error", "")))
            if state == "Failed":
                self.fail_reasons[failure_kind((rec or {}).get("error", ""))] += 1
            # 1: one end state, agreeing with the history
            i1.checked += 1
            if state not in TASK_END:
                i1.fail(f"{uid} is {state}")
            if rec is None and uid.count(".") == 1:
                i1.fail(f"{uid} has no record")
            if rec is not None and (not ev or ev[-1] != state):
                i1.fail(f"{uid} is {state} but its last event is {ev[-1] if ev else None}")
            if rec is None and ev:
                i1.fail(f"{uid} has no record but events {ev}")
            # history: attempts started (Running) and ended (out of Running/Canceling)
            runs = endings = finished = 0
            prev = None
            for st in ev:
                if st == "Running":
                    runs += 1
                if prev in ("Running", "Canceling", "Finishing") and st in ("Finished", "Failed", "Queued"):
                    endings += 1
                if st == "Finished":
                    finished += 1
                prev = st
            attempts["Running (attempts started)"] += runs
            started_cmds = len(mk["starts"])
            attempts["commands started (marker files)"] += started_cmds
            attempts["commands ended (marker files)"] += len(mk["ends"])
            # 2: canceled before it ever started: never ran its command
            if state == "Canceled" and runs == 0:
                i2a.checked += 1
                if started_cmds:
                    i2a.fail(f"{uid} was canceled before it started but ran {sorted(mk['starts'])}")
            i2b.checked += 1
            if started_cmds > runs:
                i2b.fail(f"{uid}: {started_cmds} command(s) started, {runs} attempt(s) Running "
                         f"in its history {ev}")
            # 3: each attempt ends once; Finished at most once
            i3a.checked += 1
            if finished > 1:
                i3a.fail(f"{uid} Finished {finished} times: {ev}")
            if endings != runs:
                i3a.fail(f"{uid}: {runs} attempt(s) started, {endings} ended: {ev}")
            if state == "Finished":
                i3b.checked += 1
                cid = (rec or {}).get("celery_id", "")
                out = ((rec or {}).get("output") or "").strip()
                if not cid:
                    i3b.fail(f"{uid} Finished without an attempt id")
                elif mk["starts"][cid] != 1 or mk["ends"][cid] != 1:
                    i3b.fail(f"{uid} Finished by {cid}: start x{mk['starts'][cid]}, end "
                             f"x{mk['ends'][cid]} in its marker file")
                if out != cid:
                    i3b.fail(f"{uid} Finished by {cid} but its output is {out[:80]!r}")
                if inst is not None and cid:
                    start, _end, step = tp.sweep
                    want = start + (inst - 1) * step
                    got = mk["values"].get(cid)
                    if got is None or int(got) != want:
                        i3b.fail(f"{uid} ran with sweep value {got}, expected {want}")

        # 1: nothing left queued, waiting or on a worker
        i1.checked += 1
        if self.queue:
            i1.fail(f"left in the queue: {self.queue[:10]}")
        for w, tids in self.on_workers.items():
            if tids:
                i1.fail(f"left on worker {w}: {tids[:10]}")
        for j, ts in self.waiting.items():
            i1.fail(f"job {j} still has tasks waiting on dependencies: {ts}")
        for m, (active, redo) in self.master_sets.items():
            if active or redo:
                i1.fail(f"sweep {m}: {active} instance(s) still active, {redo} in its redo list")

        # masters: counts and state
        for _j, _t, tp, mid, rec in masters:
            i1.checked += 1
            mstate = rec.get("state")
            mev = events.get(mid, [])
            if mstate not in TASK_END:
                i1.fail(f"sweep master {mid} is {mstate}")
            if not mev or mev[-1] != mstate:
                i1.fail(f"sweep master {mid} is {mstate} but its last event is {mev[-1] if mev else None}")
            recount = Counter()
            for i in range(1, tp.units + 1):
                iid = f"{mid}.{i}"
                irec = self.inst_recs.get(iid) or {}
                if irec:
                    recount[irec.get("state")] += 1
                elif "cut" in rec and i > int(rec["cut"]):
                    recount["Canceled"] += 1
                else:
                    recount[mstate if mstate in PRE_QUEUE else "Queued"] += 1
            # An instance gets a record only when dispatched or canceled ahead of its turn
            # ('pre'); the others are Queued (or the master's state before it is queued), unless
            # a cancel of the master cut them off: then they are counted in i:Canceled already
            # (cancel_master, records.instance_counts).  So i:<State> plus those implicit ones
            # must equal a recount over records, with record-less instances by the same rule.
            expected = Counter({s: int(rec.get(f"i:{s}") or 0) for s in TASK_STATES})
            if "cut" not in rec:
                implicit = tp.units - int(rec.get("next") or 0) - int(rec.get("pre") or 0)
                expected[mstate if mstate in PRE_QUEUE else "Queued"] += implicit
            i5.checked += 1
            for s in TASK_STATES:
                if expected[s] != recount[s]:
                    i5.fail(f"sweep {mid}: i:{s} (+ not materialized) = {expected[s]}, "
                            f"recount {recount[s]}")
            # 6: the master's state follows its instances
            i6.checked += 1
            want = self.expected_end(mev, recount)
            if want and mstate != want:
                i6.fail(f"sweep master {mid} is {mstate}, its instances say {want} "
                        f"({dict(recount)}; history {mev[-8:]})")

        # jobs: final, counts, state
        for j in self.submitted:
            jid = j.job_id
            rec = self.job_recs.get(jid) or {}
            jstate = rec.get("state")
            jev = job_events.get(str(jid), [])
            totals["jobs " + str(jstate)] += 1
            i1.checked += 1
            if jstate not in JOB_END:
                i1.fail(f"job {jid} is {jstate}")
            if not jev or jev[-1] != jstate:
                i1.fail(f"job {jid} is {jstate} but its last event is {jev[-1] if jev else None}")
            if self.settled_states.get(jid) != jstate:
                i1.fail(f"job {jid} was {self.settled_states.get(jid)} when settled, "
                        f"{jstate} at the end")
            recount = Counter()
            failed_sweeps = 0
            for t in range(1, len(j.tasks) + 1):
                trec = self.task_recs.get(f"{jid}.{t}") or {}
                recount[trec.get("state")] += 1
                failed_sweeps += trec.get("failed_sweeps") == "1"
            i5.checked += 1
            if int(rec.get("ntasks") or 0) != len(j.tasks):
                i5.fail(f"job {jid}: ntasks {rec.get('ntasks')}, {len(j.tasks)} added")
            for s in TASK_STATES:
                if int(rec.get(f"c:{s}") or 0) != recount[s]:
                    i5.fail(f"job {jid}: c:{s} = {rec.get(f'c:{s}')}, recount {recount[s]}")
            i6.checked += 1
            # a sweep canceled with failed instances counts against its job as a Failed task
            want = self.expected_end(jev, recount + Counter(Failed=failed_sweeps))
            if want and jstate != want:
                i6.fail(f"job {jid} is {jstate}, its tasks say {want} ({dict(recount)}; "
                        f"history {jev[-8:]})")

        # 4: processes
        i4.checked = 2
        for line in self.left_after_settle:
            i4.fail(f"alive after settling: {line}")
        for line in self.left_after_stop:
            i4.fail(f"alive after the cluster stopped: {line}")

        self.totals = totals
        self.attempts = attempts
        self.figures["units"] = len(units)
        self.figures["sweeps"] = len(masters)
        self.figures["events read"] = self.events.count

    @staticmethod
    def expected_end(history: list[str], recount: Counter) -> str | None:
        """What a job (sweep master) must end as, by job_refresh (master_refresh): Canceled if
        a cancel began in its last run (the events after its last Queued), else Failed if any
        task (instance) Failed, else Finished.  None while something has not ended."""
        if any(recount[s] for s in TASK_STATES if s not in TASK_END):
            return None
        last_queued = max((k for k, s in enumerate(history) if s == "Queued"), default=-1)
        if "Canceling" in history[last_queued + 1:]:
            return "Canceled"
        return "Failed" if recount["Failed"] else "Finished"

    def after_teardown(self) -> None:
        left = self.marked(attempts_only=False)
        for line in self.describe(left):
            self.invariants["4"].fail(f"alive after the network teardown: {line}")
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass

    @property
    def violations(self) -> int:
        return sum(len(i.violations) for i in self.invariants.values())
