"""Attacks on a real farm (separate node processes on loopback) while it renders:
strangers with the wrong key or none, plaintext, garbage floods, idle
connections and a replayed member handshake are all refused, and the job
completes with every frame."""

from __future__ import annotations

import os
import random

import trio
from factories import demo_spec
from farmtools import farm_running, job_of, start_farm, status, submit, wait_until
from rawpeer import record_handshake, replay_handshake, tcp_connect, tls_connect

from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.security.farm_key import new_key, resolve_key

FLOOD_CONNECTIONS = 300
TLS_GARBAGE_CONNECTIONS = 60
IDLE_CONNECTIONS = 40


async def _refused(address: str, key) -> str:
    try:
        async with NodeClient(address, key) as client:
            await client.status()
    except ClientError as exc:
        return str(exc)
    return "ACCEPTED"


async def _garbage(address: str, rng: random.Random) -> None:
    try:
        stream = await tcp_connect(address)
        await stream.send_all(rng.randbytes(rng.randrange(1, 4096)))
        with trio.move_on_after(2):
            while await stream.receive_some(4096):
                pass
        await stream.aclose()
    except (OSError, trio.BrokenResourceError):
        pass  # refused or reset: what a node should do to garbage


async def _tls_garbage(address: str, rng: random.Random) -> None:
    try:
        stream, _ = await tls_connect(address)
        await stream.send_all(rng.randbytes(rng.randrange(1, 4096)))
        with trio.move_on_after(2):
            while await stream.receive_some(4096):
                pass
        await stream.aclose()
    except (OSError, trio.BrokenResourceError):
        pass


async def _idle(address: str, seconds: float) -> None:
    try:
        stream = await tcp_connect(address)
    except OSError:
        return
    await trio.sleep(seconds)
    await stream.aclose()


async def attack(addresses: list[str]) -> dict[str, list[str]]:
    """Flood every node at once, then (the flood over) knock with the wrong key and none."""
    rng = random.Random(1234)
    async with trio.open_nursery() as nursery:
        for address in addresses:
            for _ in range(IDLE_CONNECTIONS):
                nursery.start_soon(_idle, address, 3.0)
        for i in range(FLOOD_CONNECTIONS):
            for address in addresses:
                nursery.start_soon(_garbage, address, random.Random(rng.random()))
            if i % 20 == 0:
                await trio.sleep(0.05)
        for _ in range(TLS_GARBAGE_CONNECTIONS):
            for address in addresses:
                nursery.start_soon(_tls_garbage, address, random.Random(rng.random()))
    results: dict[str, list] = {"wrong key": [], "no key": [], "replayed": []}
    for address in addresses:
        # The flood is over for us, not yet for a busy node: its last handshakes may
        # still fill the slots of this address. A member's status answering says not.
        with trio.fail_after(60):
            while (await _refused(address, resolve_key(None))) != "ACCEPTED":
                await trio.sleep(0.2)
        results["wrong key"].append(await _refused(address, new_key()))
        results["no key"].append(await _refused(address, None))
        # A recorded member handshake, replayed by someone without the key.
        mine, _, proof, accepted = await record_handshake(address, resolve_key(None))
        assert accepted["type"] == "PROOF"
        results["replayed"].append((await replay_handshake(address, mine, proof))[1])
    return results


def test_strangers_and_floods_are_refused_while_the_farm_renders(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=2)
    out = tmp_path / "out"
    with farm_running(farm, tmp_path):
        wait_until(
            "a full mesh",
            lambda: all(sum(p["connected"] for p in status(n)["peers"]) == 2 for n in nodes),
            30,
        )
        job_id = submit(nodes[0], demo_spec(out, frames=(1, 48), chunk=2, size=(320, 240)))
        results = trio.run(attack, nodes)  # the submitter and the other worker
        during = job_of(status(nodes[0]), job_id)
        assert during["frames_done"] < 48, "the job ended before the attack did; make it longer"
        wait_until(
            "every frame in the output folder",
            lambda: job_of(status(nodes[0]), job_id).get("complete"),
            240,
        )
        assert len(list(out.glob("demo_*.png"))) == 48
        final = [status(n) for n in nodes]
    print(f"frames done when the attacks ended: {during['frames_done']}/48")
    assert all("another farm" in r for r in results["wrong key"]), results
    assert all("needs a farm key" in r for r in results["no key"]), results
    for replies in results["replayed"]:
        assert [r["type"] for r in replies] == ["ERROR"] and "proof is wrong" in replies[0][
            "message"
        ]
    # Nobody joined: each node knows only the bootstrap server and the other node.
    for st in final:
        assert len(st["peers"]) == 2, st["peers"]
    assert final[0]["state_digest"] == final[1]["state_digest"]
    for i in (1, 2):  # each attacked node logged the refusals with the address
        assert "refused 127.0.0.1" in (tmp_path / f"node-{i}.log").read_text()
    assert os.path.exists(out / "demo.gif")
