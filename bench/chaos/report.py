"""The table a run ends with: what was done to the cluster, how the tasks ended, and each
invariant with its count of checks and violations (the first violations spelled out)."""

from __future__ import annotations

from collections import Counter


class Report:
    """Part of ``Chaos`` (bench/chaos/run.py): the report."""

    def report(self) -> str:
        cfg = self.cfg
        L = []
        nplain = sum(1 for j in self.submitted for t in j.tasks if not t.sweep)
        ninst = sum(t.units for j in self.submitted for t in j.tasks if t.sweep)
        L.append(f"hpcq chaos, seed {cfg.seed}: {self.figures.get('units')} tasks "
                 f"({nplain} plain tasks + {ninst} instances of {self.figures.get('sweeps')} sweeps) "
                 f"in {len(self.submitted)} jobs; {cfg.workers} workers x {cfg.concurrency} "
                 f"(network namespaces), {cfg.schedulers} schedulers, Redis with AOF")
        L.append(f"chaos phase {self.figures.get('chaos phase (s)')} s, settled in "
                 f"{self.figures.get('settle (s)')} s, {self.figures.get('events read')} events "
                 f"read; total {self.now():.1f} s; logs: {self.logdir}")
        L.append("")
        L.append(f"{'operation':<28}{'done':>7}{'refused':>9}{'skipped':>9}{'errors':>8}")
        order = ["submit job", "task cancel", "task requeue", "job cancel", "job requeue",
                 "kill -9 worker main", "kill -9 whole worker", "kill -9 pool process",
                 "kill -9 scheduler", "Redis restart", "link cut"]
        for name in order + sorted(set(self.ops) - set(order)):
            c = self.ops.get(name, Counter())
            L.append(f"{name:<28}{c['ok']:>7}{c['refused']:>9}{c['skipped']:>9}"
                     f"{c['error'] + c['Redis unavailable']:>8}")
        restarts = {d.name.split("@")[0]: d.lives - 1 for d in self.daemons}
        L.append(f"{'exits not caused by chaos':<28}{len(self.unexpected):>7}   (restarted as a "
                 "service manager would)")
        for name, t, reason in self.unexpected[:10]:
            L.append(f"    t={t:.1f} {name.split('@')[0]}: {reason}")
        L.append(f"{'restarts under the same name':<28}{sum(restarts.values()):>7}   "
                 + ", ".join(f"{k} {v}" for k, v in restarts.items()))
        L.append("")
        t = self.totals
        L.append("end states: " + ", ".join(f"{s} {t[s]}" for s in ("Finished", "Failed", "Canceled"))
                 + "; jobs: " + ", ".join(f"{s} {t['jobs ' + s]}" for s in ("Finished", "Failed", "Canceled")))
        L.append("attempts: " + ", ".join(f"{k} {v}" for k, v in self.attempts.items()))
        L.append("refused operations (nothing changed): " + (", ".join(
            f"{k} {v}" for k, v in self.refusals.most_common()) or "none"))
        top = sorted(self.reruns, reverse=True)[:3]
        L.append(f"automatic reruns after system errors: {sum(r[0] for r in self.reruns)} in "
                 f"{len(self.reruns)} tasks; most: " + ("; ".join(
                     f"{uid} x{n} (last: {last[:70]})" for n, uid, last, _ in top) or "none"))
        L.append("why tasks ended Failed: " + (", ".join(
            f"{k} {v}" for k, v in self.fail_reasons.most_common()) or "none"))
        L.append("")
        L.append(f"{'invariant':<75}{'checked':>8}{'violations':>11}")
        for key in ("1", "2", "2b", "3", "3b", "4", "5", "6"):
            inv = self.invariants[key]
            L.append(f"{key:<3}{inv.title:<72}{inv.checked:>8}{len(inv.violations):>11}")
        for key, inv in self.invariants.items():
            for v in inv.violations[:15]:
                L.append(f"  ! [{key}] {v}")
            if len(inv.violations) > 15:
                L.append(f"  ! [{key}] ... {len(inv.violations) - 15} more")
        L.append("")
        L.append("ALL INVARIANTS HOLD" if not self.violations
                 else f"{self.violations} VIOLATION(S); logs and marker files kept in {self.workdir}")
        return "\n".join(L)
