"""Run a bootstrap server: the node's non-rendering variant plus JOIN answers."""

from __future__ import annotations

from pathlib import Path

import trio

from peerfarm.runtime.link import Link
from peerfarm.runtime.node import Node, NodeConfig
from peerfarm.security.farm_key import FarmKey
from peerfarm.wire.messages import message


async def answer_join(node: Node, link: Link) -> None:
    """JOIN -> JOIN_REPLY with the KWL and our version vector.

    The replicated state itself travels as the log the joiner lacks: it sent its
    version vector on connect, and the normal anti-entropy answer streams every
    missing action in batches. (A folded snapshot could not take actions that
    arrive late and sort before it; the log can.) The joiner starts rendering
    once its version vector covers the one in the reply.
    """
    kwl = [
        {"node_id": peer_id, "address": entry["address"], "name": entry.get("name", "")}
        for peer_id, entry in node.kwl.items()
        if peer_id != link.peer_id
    ]
    await link.send(message("JOIN_REPLY", kwl=kwl, vv=node.log.version_vector()))


def bootstrap_node(
    listen: tuple[str, int],
    data_dir: Path,
    name: str = "bootstrap",
    farm_key: FarmKey | None = None,
) -> Node:
    config = NodeConfig(
        listen=listen,
        data_dir=data_dir,
        slots=0,
        name=name,
        renders=False,
        role="bootstrap",
        farm_key=farm_key,
    )
    return Node(config, join_handler=answer_join)


async def run_bootstrap(
    listen: tuple[str, int],
    data_dir: Path,
    *,
    farm_key: FarmKey | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    await bootstrap_node(listen, data_dir, farm_key=farm_key).run(task_status=task_status)
