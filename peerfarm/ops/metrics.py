"""The metrics endpoint: a node's numbers in Prometheus' text format, over HTTP.

Off unless asked for (``--metrics [HOST:]PORT``), and on loopback unless a host
is given: the numbers say what a farm renders and who is in it. Everything is
read when Prometheus scrapes, in trio's thread (the node is not thread-safe):

- from the node's public API: the replicated log (``node.actions()``: chunks
  this node claimed, rendered, gave back, failed, lost; frames it rendered; every
  action type farm-wide), ``node.status()`` (peers and their link state, jobs,
  the worker) and the log file's size;
- from ``node.counters`` (peerfarm/runtime/counters.py), what the API does not
  show: renderer seconds and the bytes links moved.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from peerfarm import __version__
from peerfarm.core import actions as a
from peerfarm.runtime.addresses import format_address, parse_address
from peerfarm.runtime.node import Node
from peerfarm.security.farm_key import key_id_of

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 10.0


def metrics_address(text: str) -> tuple[str, int]:
    """argparse type for --metrics: PORT (on loopback) or HOST:PORT."""
    import argparse

    try:
        if text.isdigit():
            text = f"{DEFAULT_HOST}:{text}"
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; or give a port alone for {DEFAULT_HOST}:PORT"
        ) from None


class NodeCollector:
    """One scrape: the node's numbers at that moment."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = InfoMetricFamily("peerfarm_node", "This node: id, name, role, version, farm key id")
        info.add_metric(
            [],
            {
                "node_id": node.node_id,
                "name": node.name,
                "role": node.config.role,
                "version": __version__,
                "farm_key_id": key_id_of(node.config.farm_key),
            },
        )
        yield info
        yield from self._from_log()
        yield from self._from_status()
        yield from self._from_counters()

    def _from_log(self) -> Iterator[Metric]:
        node = self.node
        me = node.node_id
        jobs = node.state.jobs
        by_type: Counter[str] = Counter()
        mine: Counter[str] = Counter()
        frames = tiles = lost_here = 0
        for action in node.actions():
            by_type[action.type] += 1
            if action.type == a.CHUNK_LOST and action.payload.get("holder") == me:
                lost_here += 1
            if action.origin != me:
                continue
            mine[action.type] += 1
            if action.type == a.DONE:
                job = jobs.get(action.payload["job_id"])
                if job is None:
                    continue
                if job.tiles > 1:
                    tiles += 1
                else:
                    frames += len(job.frames_of(action.payload["chunk"]))
        actions = CounterMetricFamily(
            "peerfarm_farm_actions",
            "Actions in the replicated log, farm-wide, by type",
            labels=["type"],
        )
        for kind in sorted(a.ACTION_TYPES):
            actions.add_metric([kind], by_type[kind])
        yield actions
        for name, kind, text in (
            ("claimed", a.CLAIM_CHUNK, "Chunks this node claimed (claims that lost a race too)"),
            ("rendered", a.DONE, "Chunks (or tiles) this node rendered"),
            ("released", a.RELEASE_CHUNK, "Chunks this node gave back unrendered"),
            ("failed", a.CHUNK_FAILED, "Chunks whose render failed on this node"),
        ):
            yield CounterMetricFamily(f"peerfarm_chunks_{name}", text, value=mine[kind])
        yield CounterMetricFamily(
            "peerfarm_chunks_lost",
            "Chunks this node rendered whose frames were lost before collection (CHUNK_LOST)",
            value=lost_here,
        )
        yield CounterMetricFamily(
            "peerfarm_frames_rendered", "Whole frames this node rendered", value=frames
        )
        yield CounterMetricFamily(
            "peerfarm_tiles_rendered", "Tiles of tiled frames this node rendered", value=tiles
        )
        yield GaugeMetricFamily(
            "peerfarm_log_actions",
            "Actions in this node's copy of the log",
            value=sum(by_type.values()),
        )
        try:
            size = node.data_dir.log_file.stat().st_size
        except OSError:
            size = 0
        yield GaugeMetricFamily("peerfarm_log_bytes", "Size of the log file on disk", value=size)

    def _from_status(self) -> Iterator[Metric]:
        node = self.node
        try:
            status: dict[str, Any] = node.status()
        except Exception:  # still starting: only what is known without the machine
            status = {"peers": [], "jobs": [], "worker": None}
        peers = GaugeMetricFamily(
            "peerfarm_peers", "Peers this node knows, by health as it sees them", labels=["state"]
        )
        health = Counter(p["state"] for p in status["peers"])
        for state in sorted({"up", "suspect", "down", "left", *health}):
            peers.add_metric([state], health[state])
        yield peers
        link = GaugeMetricFamily(
            "peerfarm_peer_linked",
            "1 while this node has a live link to the peer",
            labels=["peer_id", "peer_name", "state"],
        )
        for p in status["peers"]:
            link.add_metric([p["id"], p["name"] or "", p["state"]], 1 if p["connected"] else 0)
        yield link
        yield GaugeMetricFamily(
            "peerfarm_links", "Live links to peers", value=len(node.linked_peers())
        )
        jobs = GaugeMetricFamily("peerfarm_jobs", "Jobs in the farm, by state", labels=["state"])
        for state, count in sorted(Counter(j["state"] for j in status["jobs"]).items()):
            jobs.add_metric([state], count)
        yield jobs
        worker = status.get("worker")
        if worker is not None:
            yield GaugeMetricFamily(
                "peerfarm_worker_slots", "Renders at once", value=worker["slots"]
            )
            yield GaugeMetricFamily(
                "peerfarm_renders_running",
                "Renderer processes running now",
                value=len(worker["rendering"]),
            )
            yield GaugeMetricFamily(
                "peerfarm_worker_paused",
                "1 while this machine's rendering is paused",
                value=1 if worker["paused"] else 0,
            )
        renderers = GaugeMetricFamily(
            "peerfarm_renderer_available",
            "Renderers this node found, by version",
            labels=["renderer", "version"],
        )
        for name, version in sorted(node.renderers.items()):
            renderers.add_metric([name, version], 1)
        yield renderers

    def _from_counters(self) -> Iterator[Metric]:
        counters = self.node.counters
        seconds = CounterMetricFamily(
            "peerfarm_renderer_seconds",
            "Wall-clock seconds renderer processes ran on this node",
            labels=["renderer"],
        )
        for name, value in sorted(counters.renderer_seconds.items()):
            seconds.add_metric([name], value)
        yield seconds
        yield CounterMetricFamily(
            "peerfarm_link_sent_bytes",
            "Message bytes this node sent to peers and clients (before TLS)",
            value=counters.bytes_sent,
        )
        yield CounterMetricFamily(
            "peerfarm_link_received_bytes",
            "Message bytes this node received from peers and clients (before TLS)",
            value=counters.bytes_received,
        )
        yield from self._from_retention()

    def _from_retention(self) -> Iterator[Metric]:
        retention = self.node.retention
        yield CounterMetricFamily(
            "peerfarm_retention_runs", "Retention runs on this node (not dry)", value=retention.runs
        )
        yield CounterMetricFamily(
            "peerfarm_retention_errors",
            "Files retention could not delete (held open, permission denied)",
            value=retention.errors,
        )
        deleted = CounterMetricFamily(
            "peerfarm_retention_deleted",
            "Job folders and blob files retention deleted, by kind",
            labels=["kind"],
        )
        freed = CounterMetricFamily(
            "peerfarm_retention_freed_bytes", "Bytes retention freed, by kind", labels=["kind"]
        )
        for kind, (count, size) in sorted(retention.freed_total.items()):
            deleted.add_metric([kind], count)
            freed.add_metric([kind], size)
        yield deleted
        yield freed
        last = retention.last_report
        if last is not None:
            for name, key, text in (
                ("needed", "needed_bytes", "what live jobs need"),
                ("grace", "grace_bytes", "collected jobs' frames in their grace"),
                ("over_budget", "over_budget_bytes", "above the budget, not deletable"),
            ):
                yield GaugeMetricFamily(
                    f"peerfarm_retention_{name}_bytes",
                    f"Bytes of the data folder at the last retention run: {text}",
                    value=last[key],
                )


def registry_for(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))  # type: ignore[arg-type]
    return registry


async def serve_metrics(
    node: Node,
    address: tuple[str, int],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics on ``address``; ``task_status`` gets the bound HOST:PORT."""
    host, port = address
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = format_address(host, listeners[0].socket.getsockname()[1])
    log.info("metrics on http://%s/metrics", bound)
    task_status.started(bound)
    await trio.serve_listeners(functools.partial(_answer, registry_for(node)), listeners)


async def _answer(registry: CollectorRegistry, stream: trio.SocketStream) -> None:
    """One HTTP/1.0-style exchange: read the request head, answer, close."""
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                data = await stream.receive_some(4096)
                if not data or len(head) > MAX_REQUEST:
                    return
                head += data
            lines = head.decode("latin-1").splitlines()
            parts = lines[0].split() if lines else []
            method, path = (parts + ["", ""])[:2]
            accept = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in lines
                    if line.lower().startswith("accept:")
                ),
                "",
            )
            if method not in ("GET", "HEAD"):
                await _send(stream, "405 Method Not Allowed", b"GET only\n")
            elif path.split("?")[0] not in ("/metrics", "/"):
                await _send(stream, "404 Not Found", b"metrics are at /metrics\n")
            else:
                # Prometheus' text format, or OpenMetrics when the scraper asks for it.
                encode, content_type = choose_encoder(accept)
                body = encode(registry)
                await _send(stream, "200 OK", body, content_type, head_only=method == "HEAD")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("metrics request: %s", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def _send(
    stream: trio.SocketStream,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
) -> None:
    header = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    await stream.send_all(header + (b"" if head_only else body))
