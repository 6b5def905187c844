"""Whether a task could ever run on the cluster as it is: what it asks for (schema.RESOURCES)
against what the online workers advertise.  Used by ``task view``'s Reason ("needs 8 cores; the
largest worker has 4") and by a strict submit, which refuses such a job instead of queuing it.
Placement itself is dispatch.lua's; this only explains it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    cores: int = 1
    memory: int = 0
    gpus: int = 0
    group: str = ""
    exclusive: bool = False

    @classmethod
    def of(cls, record: dict) -> Request:
        """From a task record (a sweep instance asks what its master asks)."""
        return cls(cores=int(record.get("cores") or 1), memory=int(record.get("memory") or 0),
                   gpus=int(record.get("gpus") or 0), group=record.get("group") or "",
                   exclusive=record.get("exclusive") == "1")

    def to_dict(self) -> dict:
        return {"cores": self.cores, "memory": self.memory, "gpus": self.gpus,
                "group": self.group or None, "exclusive": self.exclusive}


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _fits(node, req: Request) -> bool:
    return (node.slots >= 1 and (not req.group or req.group in node.groups)
            and node.cores >= req.cores and len(node.gpus) >= req.gpus
            and (node.memory is None or node.memory >= req.memory))


def never_fits(req: Request, nodes) -> str | None:
    """Why no online worker could run ``req`` even when idle, or None if one could (or none is
    online: then nothing can be said about sizes)."""
    online = [n for n in nodes if n.takes_work]
    if not online or any(_fits(n, req) for n in online):
        return None
    where = online
    scope = "worker"
    if req.group:
        where = [n for n in online if req.group in n.groups]
        if not where:
            return f"needs node group {req.group}; no online worker is in it"
        scope = f"worker in group {req.group}"
    most = max(n.cores for n in where)
    if most < req.cores:
        return f"needs {plural(req.cores, 'core')}; the largest {scope} has {most}"
    gpus = max(len(n.gpus) for n in where)
    if gpus < req.gpus:
        return f"needs {plural(req.gpus, 'GPU')}; the most any {scope} has is {gpus}"
    memory = [n.memory for n in where if n.memory is not None]
    if memory and len(memory) == len(where) and max(memory) < req.memory:
        return f"needs {req.memory} MB of memory; the largest {scope} has {max(memory)} MB"
    return (f"needs {plural(req.cores, 'core')}, {plural(req.gpus, 'GPU')} and {req.memory} MB "
            f"on one worker; no online {scope} has them all")
