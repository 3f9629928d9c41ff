"""Small builders of plain actions for the core tests."""

from __future__ import annotations

from peerfarm.core.actions import Action
from peerfarm.core.log import ActionLog

A = "a" * 16
B = "b" * 16
C = "c" * 16


def new_job_payload(job_id: str = "job1", frames: tuple[int, int] = (1, 8), chunk: int = 2) -> dict:
    return {
        "job_id": job_id,
        "name": "demo",
        "renderer": "builtin",
        "renderer_version": "",
        "scene": "{}",
        "files": {},
        "main": "",
        "options": [],
        "frame_start": frames[0],
        "frame_end": frames[1],
        "chunk_size": chunk,
        "padding": 4,
        "width": 64,
        "height": 48,
        "output": "/tmp/out",
        "priority": 0,
    }


def act(type_: str, payload: dict, origin: str, seq: int, lamport: int) -> Action:
    return Action(type_, payload, origin, seq, lamport)


def demo_spec(output, frames=(1, 6), chunk=2, size=(32, 24)):  # noqa: ANN201
    """A job request for builtin:demo."""
    from peerfarm.job_request import JobRequest
    from peerfarm.renderers.builtin import builtin_scene_text

    return JobRequest(
        scene=builtin_scene_text("demo"),
        name="demo",
        frames=tuple(frames),
        chunk_size=chunk,
        width=size[0],
        height=size[1],
        output=str(output),
    )


def builtin_request(**extra):  # noqa: ANN201
    """A job request for one 64x48 frame of builtin:demo, for checks without a farm."""
    from peerfarm.job_request import JobRequest
    from peerfarm.renderers.builtin import builtin_scene_text

    return JobRequest(
        scene=builtin_scene_text("demo"),
        name="demo",
        frames=(1, 1),
        width=64,
        height=48,
        output="/tmp/peerfarm-test-out",
    ).replace(**extra)


def joined_payload(name: str, renderers: dict | None = None) -> dict:
    """A PEER_JOINED payload of a rendering node with the built-in renderer."""
    return {
        "name": name,
        "address": "h:1",
        "slots": 1,
        "renders": True,
        "renderers": {"builtin": "0.1.0"} if renderers is None else renderers,
    }


class Member:
    """A node's own side of its feed: creates its actions, signs the last of a batch."""

    def __init__(self, identity) -> None:
        self.identity = identity
        self.id = identity.node_id
        self.log = ActionLog(authenticate=True)

    def emit(self, *batch: tuple[str, dict]) -> list[Action]:
        out = []
        for type_, payload in batch:
            action = self.log.create(self.id, type_, payload, self.identity.cert_der)
            self.log.add(action, trusted=True)
            out.append(action)
        out[-1] = self.log.sign_last(self.id, self.identity.sign(out[-1].hash))
        return out
