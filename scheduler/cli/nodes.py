"""``hpcq node ...``: the workers, as HPC Pack's ``node`` command and Slurm's ``sinfo`` show
them (list, view).  What a state, a used or a free slot means is scheduler/api/nodes.py's: an
online or draining worker silent past the worker timeout shows ``unreachable``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import click

from scheduler.api.nodes import Node
from scheduler.cli import common, render
from scheduler.cli.common import json_option, redis_option

COLUMNS = ("Name", "State", "Used/Slots", "Free", "Cores", "GPUs", "Groups", "Tasks", "Heartbeat",
           "Started", "Queue")
#: Task ids a row of ``node list`` shows before "+N".
SHOWN_TASKS = 4


def fmt_age(node: Node) -> str:
    return "never" if node.heartbeat_age is None else f"{node.heartbeat_age:.1f} s ago"


def fmt_tasks(node: Node, limit: int = SHOWN_TASKS) -> str:
    ids = node.task_ids
    more = f" +{len(ids) - limit}" if len(ids) > limit else ""
    return ",".join(ids[:limit]) + more or "-"


def node_rows(nodes: Iterable[Node]) -> Iterator[list[str]]:
    for n in nodes:
        yield [n.name, n.state, f"{n.used}/{n.slots}", str(n.free), f"{n.cores_used}/{n.cores}",
               f"{len(n.gpus_used)}/{len(n.gpus)}" if n.gpus else "-", ",".join(n.groups) or "-",
               fmt_tasks(n), fmt_age(n), render.fmt_time(n.started), n.queue]


def show_node(node: Node) -> None:
    state = node.state
    if state != node.recorded_state:
        state += f" (recorded {node.recorded_state}; no heartbeat for more than " \
                 f"{node.worker_timeout:g} s)"
    rows: list[tuple[str, object]] = [
        ("Name", node.name), ("State", state), ("Slots", node.slots),
        ("Used", f"{node.used}" + (f" ({node.stale} stale, being killed)" if node.stale else "")),
        ("Free", node.free),
        ("Cores", f"{node.cores_used} of {node.cores} used"),
        ("Memory", f"{node.memory} MB" if node.memory is not None else "not counted"),
        ("GPUs", f"{','.join(node.gpus)} ({','.join(node.gpus_used) or 'none'} used)" if node.gpus else "none"),
        ("Groups", ",".join(node.groups) or "none"),
        ("Tasks", "\n".join(f"{tid} {st}" for tid, st in node.tasks) or "-"),
        ("Last heartbeat", f"{render.fmt_time(node.last_heartbeat)} ({fmt_age(node)})"
         if node.last_heartbeat is not None else "never"),
        ("Started", render.fmt_time(node.started)), ("Lost at", render.fmt_time(node.lost_at)),
        ("Queue", node.queue), ("Pid", node.pid),
    ]
    render.kv_list(rows)


@click.group("node")
@redis_option
def node_group():
    """List and view the workers (HPC Pack's `node` command, Slurm's `sinfo`)."""


@node_group.command("list")
@redis_option
@json_option
def node_list(as_json):
    """List every worker: state, slots used/total and free, tasks held, last heartbeat.

    An online or draining worker silent past HPCQ_WORKER_TIMEOUT shows `unreachable` until the
    scheduler declares it lost; a lost or stopped one is listed until the scheduler forgets it."""
    nodes = common.connect().get_node_list()
    if as_json:
        render.emit_json([n.to_dict() for n in nodes])
    else:
        render.table(COLUMNS, node_rows(nodes), empty="no nodes")


@node_group.command("view")
@click.argument("name")
@redis_option
@json_option
def node_view(name, as_json):
    """Show one worker: its state, slots, the tasks it holds, heartbeat, start, queue."""
    node = common.connect().get_node(name)
    if as_json:
        render.emit_json(node.to_dict())
    else:
        show_node(node)
