"""Renderer processes with real processes: they die with their node (SIGKILL included),
stop as a whole tree, stay out of reach of the terminal's Ctrl+C, and a restarted node
kills the ones an earlier run left behind, never an unrelated process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from PIL import Image

from peerfarm.child_processes import RENDERER_NICENESS
from peerfarm.renderers.base import renderer_environment
from peerfarm.renderers.povray import PovrayRenderer
from peerfarm.renderers.povray.sandbox import unavailable_reason
from peerfarm.runtime.renderer_processes import (
    RECORD_FILE,
    RendererProcesses,
    process_start_time,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="watches processes through Linux's /proc"
)

DEADLINE = 10.0  # generous: only how long we wait for what must happen, never a measure

# A renderer that starts a child of its own with no tie to it (as a careless renderer
# might), reports both pids, and renders until a file appears (or for a minute).
RENDERER = """\
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
print(f"RENDERER {os.getpid()} {child.pid}", flush=True)
go = sys.argv[1] if len(sys.argv) > 1 else None
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not (go and os.path.exists(go)):
    time.sleep(0.02)
child.kill()
child.wait()
print("FINISHED", flush=True)
"""

# A node in miniature: runs one renderer through RendererProcesses and relays its
# output. On SIGINT it says so and goes on, as a node's graceful stop lets its
# renderers finish.
NODE = """\
import os, signal, subprocess, sys
from functools import partial
from pathlib import Path
import trio
from peerfarm.runtime.renderer_processes import RendererProcesses

def on_sigint(signum, frame):
    os.write(1, b"NODE GOT SIGINT\\n")

signal.signal(signal.SIGINT, on_sigint)
data_dir, *command = sys.argv[1:]

async def main():
    processes = RendererProcesses(Path(data_dir))
    async with trio.open_nursery() as nursery:
        run = partial(processes.run, command, cwd=data_dir, env=dict(os.environ),
                      stdout=subprocess.PIPE)
        process = await nursery.start(run)
        print(f"GUARD {process.pid}", flush=True)
        async for data in process.stdout:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    print(f"EXIT {process.returncode}", flush=True)

trio.run(main)
"""


def _state(pid: int) -> str:
    """The process's state letter in /proc (R, S, T for stopped, Z...); "" when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie nobody reaped yet is dead, too


def _wait_until_gone(pids: list[int]) -> list[int]:
    """The pids still alive after DEADLINE (none, normally much sooner)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.02)
    return [pid for pid in pids if not _gone(pid)]


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@pytest.fixture
def renderer(tmp_path) -> list[str]:
    script = tmp_path / "renderer.py"
    script.write_text(RENDERER)
    return [sys.executable, str(script)]


class Node:
    """A node process running one renderer (NODE above)."""

    def __init__(self, data_dir: Path, command: list[str], **options) -> None:
        data_dir.mkdir(exist_ok=True)
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-c", NODE, str(data_dir), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            **options,
        )

    def line(self, prefix: str) -> list[str]:
        """The words after `prefix` on the next line that starts with it."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].split()
        raise AssertionError(f"the node ended without a {prefix!r} line")

    def renderer_tree(self) -> tuple[int, int, int]:
        """(guard, renderer, the renderer's own child), once the renderer runs."""
        (guard,) = map(int, self.line("GUARD "))
        renderer, child = map(int, self.line("RENDERER "))
        return guard, renderer, child

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def nodes():
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


def test_renderer_tree_dies_with_its_sigkilled_node(tmp_path, renderer, nodes):
    node = Node(tmp_path / "node", renderer)
    nodes.append(node)
    guard, pid, child = node.renderer_tree()
    assert _children(guard) == [pid] and _children(pid) == [child]
    # Its own session: the terminal's signals and the node's process group miss it.
    assert os.getsid(pid) == os.getpgid(pid) == guard != os.getpgid(node.process.pid)
    assert os.getpriority(os.PRIO_PROCESS, pid) == RENDERER_NICENESS
    record = json.loads((node.data_dir / RECORD_FILE).read_text())
    assert record == {"renderers": [{"pid": guard, "started": process_start_time(guard)}]}

    node.process.kill()
    node.process.wait()
    assert _wait_until_gone([guard, pid, child]) == []


@pytest.mark.skipif(shutil.which("povray") is None, reason="needs povray (apt-get install povray)")
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def _slow_povray_chunk(tmp_path: Path) -> list[str]:
    """The command of a POV-Ray chunk that renders for minutes."""
    slow = "camera { location -z look_at 0 }\n" + "".join(
        f"sphere {{ <{i % 7 - 3}, {i % 5 - 2}, {i}>, 0.5 pigment {{ rgb 1 }} "
        "finish { reflection 0.9 } }\n"
        for i in range(200)
    )
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    ini = "Input_File_Name=slow.pov\nInitial_Frame=1\nFinal_Frame=100\n+A0.0 +R9\n"
    (work_dir / "slow.ini").write_text(ini)
    (work_dir / "slow.pov").write_text(slow)
    job = SimpleNamespace(main="slow.ini", options=[], width=1600, height=1200)
    pattern = str(tmp_path / "frames" / "f_{frame:04d}.png")
    return PovrayRenderer().chunk_command(job, range(1, 101), work_dir, pattern)


def test_povray_and_its_wrapper_die_with_their_sigkilled_node(tmp_path, nodes):
    command = _slow_povray_chunk(tmp_path)
    node = Node(tmp_path / "node", command)
    nodes.append(node)
    (guard,) = map(int, node.line("GUARD "))
    assert node.line("START ") == ["1"]
    (wrapper,) = _children(guard)
    (povray,) = _children(wrapper)
    assert Path(f"/proc/{povray}/exe").resolve().name.startswith("povray")

    node.process.kill()
    node.process.wait()
    assert _wait_until_gone([guard, wrapper, povray]) == []


def test_a_renderer_killed_by_a_signal_takes_its_children_along(tmp_path, renderer):
    """What a wrapper killed with SIGKILL leaves running (its povray or blender) is stopped
    by the guard, even where the kernel has no PR_SET_PDEATHSIG (macOS)."""
    log = tmp_path / "chunk.log"

    async def main() -> int | None:
        processes = RendererProcesses(tmp_path)
        with open(log, "wb") as stderr:
            async with trio.open_nursery() as nursery:
                run = partial(
                    processes.run,
                    renderer,
                    cwd=tmp_path,
                    env=dict(os.environ),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
                process = await nursery.start(run)
                lines = b""
                async for data in process.stdout:
                    lines += data
                    if b"\n" in lines:
                        _, pid, child = lines.split(b"\n")[0].split()
                        os.kill(int(pid), signal.SIGKILL)
                        break
        assert _wait_until_gone([int(pid), int(child)]) == []
        return process.returncode

    assert trio.run(main) == -signal.SIGKILL
    assert "the renderer was killed by SIGKILL" in log.read_text()
    assert not (tmp_path / RECORD_FILE).exists()  # it ended: no longer recorded


def test_a_renderer_outlives_the_thread_that_started_it(tmp_path, renderer, monkeypatch):
    """trio starts processes from worker threads that end after 10 s idle; a renderer
    tied to that thread (PR_SET_PDEATHSIG set in trio.run_process's preexec_fn) would
    be killed with it. Threads are made to end at once here to show that it is not."""
    from trio._core import _thread_cache

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    go = tmp_path / "go"

    async def main() -> tuple[int | None, bytes]:
        processes = RendererProcesses(tmp_path)
        async with trio.open_nursery() as nursery:
            run = partial(
                processes.run,
                [*renderer, str(go)],
                cwd=tmp_path,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            process = await nursery.start(run)
            output = await process.stdout.receive_some()
            await trio.sleep(0.5)  # the thread that forked is gone by now
            go.touch()
            output += b"".join([data async for data in process.stdout])
        return process.returncode, output

    status, output = trio.run(main)
    assert output.endswith(b"FINISHED\n") and status == 0


def test_exit_status_and_output_pass_through_the_guard(tmp_path):
    async def main() -> subprocess.CompletedProcess[bytes]:
        processes = RendererProcesses(tmp_path)
        with open(tmp_path / "chunk.log", "wb") as stderr:
            async with trio.open_nursery() as nursery:
                command = [sys.executable, "-c", "print('FRAME 1 ż.png'); raise SystemExit(3)"]
                run = partial(
                    processes.run,
                    command,
                    cwd=tmp_path,
                    env=dict(os.environ, PYTHONIOENCODING="utf-8"),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
                process = await nursery.start(run)
                output = b"".join([data async for data in process.stdout])
        assert output == "FRAME 1 ż.png\n".encode()
        return process.returncode

    assert trio.run(main) == 3


def test_cancelling_a_render_stops_the_whole_tree(tmp_path, renderer):
    async def main() -> tuple[int, int]:
        processes = RendererProcesses(tmp_path)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                run = partial(
                    processes.run,
                    renderer,
                    cwd=tmp_path,
                    env=dict(os.environ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                process = await nursery.start(run)
                line = await process.stdout.receive_some()
                _, pid, child = line.split()
                scope.cancel()
        assert scope.cancelled_caught
        return int(pid), int(child)

    pid, child = trio.run(main)
    assert _wait_until_gone([pid, child]) == []
    assert not (tmp_path / RECORD_FILE).exists()


def test_ctrl_c_in_the_nodes_terminal_does_not_reach_its_renderer(tmp_path, renderer, nodes):
    go = tmp_path / "go"
    # The node leads its own process group, as a shell's foreground job does: Ctrl+C is
    # SIGINT to that whole group.
    node = Node(tmp_path / "node", [*renderer, str(go)], start_new_session=True)
    nodes.append(node)
    guard, pid, child = node.renderer_tree()
    os.killpg(node.process.pid, signal.SIGINT)
    assert node.line("NODE GOT SIGINT") == []
    go.touch()  # the render in flight finishes: nothing stopped it
    assert node.line("FINISHED") == []
    assert node.line("EXIT ") == ["0"]
    assert node.process.wait(timeout=DEADLINE) == 0


def test_restart_kills_the_renderers_a_killed_node_left_behind(tmp_path, renderer, nodes):
    node = Node(tmp_path / "node", renderer)
    nodes.append(node)
    guard, pid, child = node.renderer_tree()
    # A guard that cannot act (stopped) when its node is killed: the tree lives on.
    os.kill(guard, signal.SIGSTOP)
    # Stopped for sure before the node dies (a signal takes effect a moment later), or the
    # guard may still see its node go and end the tree as it should.
    deadline = time.monotonic() + DEADLINE
    while _state(guard) != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    node.process.kill()
    node.process.wait()
    time.sleep(0.2)
    assert not _gone(pid) and not _gone(child)

    killed = RendererProcesses(node.data_dir).kill_leftovers()  # the node starts again
    assert killed == [guard]
    assert _wait_until_gone([guard, pid, child]) == []
    assert not (node.data_dir / RECORD_FILE).exists()


def test_leftover_cleanup_never_kills_a_process_that_reused_a_recorded_pid(tmp_path):
    unrelated = subprocess.Popen(["sleep", "60"])  # has a recorded pid, started later
    ours = subprocess.Popen(["sleep", "60"])  # a leftover indeed (not a group leader)
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid: recorded, now nobody's
    try:
        records = [
            {"pid": unrelated.pid, "started": "0:1"},  # another process had it then
            {"pid": ours.pid, "started": process_start_time(ours.pid)},
            {"pid": ended.pid, "started": "0:2"},
        ]
        (tmp_path / RECORD_FILE).write_text(json.dumps({"renderers": records}))
        assert RendererProcesses(tmp_path).kill_leftovers() == [ours.pid]
        assert ours.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert unrelated.poll() is None
        assert not (tmp_path / RECORD_FILE).exists()
    finally:
        for process in (unrelated, ours):
            process.kill()
            process.wait()


def test_a_renderer_that_cannot_start_fails_with_127_and_says_why(tmp_path):
    async def main() -> int | None:
        with open(tmp_path / "chunk.log", "wb") as stderr:
            result = await RendererProcesses(tmp_path).run(
                [str(tmp_path / "no-such-renderer")], cwd=tmp_path, env={}, stderr=stderr
            )
        return result.returncode

    assert trio.run(main) == 127
    assert "cannot run" in (tmp_path / "chunk.log").read_text()


def test_a_broken_record_file_is_ignored(tmp_path):
    (tmp_path / RECORD_FILE).write_text("{not json")
    assert RendererProcesses(tmp_path).kill_leftovers() == []
    assert not (tmp_path / RECORD_FILE).exists()


# --- spare guards: the next chunk's guard started ahead, its wrapper imported -----------

WRAPPER = "peerfarm.renderers.builtin"  # a wrapper module of peerfarm's own: runs in a fork


def _builtin(frames: str, size: str, pattern: str) -> list[str]:
    command = [sys.executable, "-m", WRAPPER, "--scene-file", "builtin:demo", "--frames", frames]
    return [*command, "--size", size, "--output-pattern", pattern]


def _cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def _spare_of(processes: RendererProcesses) -> int:
    """The pid of the spare guard started behind a render (waits for it)."""
    with trio.fail_after(DEADLINE):
        while not processes._spares:
            await trio.sleep(0.02)
    return processes._spares[0][0].pid


def test_the_next_chunk_starts_in_a_spare_guard_with_its_own_folder_and_log(tmp_path):
    """A wrapper chunk leaves a spare guard behind; the next one runs in it: in the
    chunk's folder (a relative output path lands there), its stderr in the chunk's log,
    its exit status passed on, as a freshly started guard does."""

    async def chunk(processes: RendererProcesses, i: int, command: list[str]) -> tuple:
        work = tmp_path / f"work{i}"
        work.mkdir()
        return await _chunk_in(processes, command, work, tmp_path / f"chunk{i}.log")

    async def main() -> tuple:
        processes = RendererProcesses(tmp_path)
        first = await chunk(processes, 1, _builtin("1", "16x12", "out/f_{frame:04d}.png"))
        spare = await _spare_of(processes)
        second = await chunk(processes, 2, _builtin("2", "16x12", "out/f_{frame:04d}.png"))
        another = await _spare_of(processes)
        bad = await chunk(processes, 3, _builtin("3", "0x0", "out/f_{frame:04d}.png"))
        await processes.close_spares()
        return first, spare, second, another, bad

    first, spare, second, another, bad = trio.run(main)
    assert b"--spares" not in first[1] and first[3] == 0
    assert second[0] == spare and b"--spares" in second[1] and second[3] == 0
    assert b"FRAME 2" in second[2]
    assert (tmp_path / "work2" / "out" / "f_0002.png").is_file()
    assert bad[0] == another and bad[3] == 2  # a wrapper's usage error, from the spare
    assert "--size" in (tmp_path / "chunk3.log").read_text()
    assert _wait_until_gone([spare, another]) == []
    assert not (tmp_path / RECORD_FILE).exists()  # every guard, spare or not, ended


def test_a_chunk_in_a_spare_guard_stops_as_a_whole_tree_when_cancelled(tmp_path):
    async def main() -> tuple[int, list[int], int | None]:
        processes = RendererProcesses(tmp_path)
        env = renderer_environment(tmp_path)
        pattern = str(tmp_path / "f_{frame:04d}.png")
        run = partial(processes.run, cwd=tmp_path, env=env, stdout=subprocess.PIPE)
        with open(tmp_path / "chunk.log", "wb") as stderr:
            async with trio.open_nursery() as nursery:
                first = _builtin("1", "8x6", pattern)
                process = await nursery.start(partial(run, first, stderr=stderr))
                _ = [data async for data in process.stdout]
            spare = await _spare_of(processes)
            async with trio.open_nursery() as nursery:
                slow = _builtin("1-48", "1600x1200", pattern)  # minutes: the scene's whole range
                process = await nursery.start(partial(run, slow, stderr=stderr))
                assert process.pid == spare
                with trio.fail_after(DEADLINE):
                    while not _children(spare):
                        await trio.sleep(0.02)
                tree = [spare, *_children(spare)]
                nursery.cancel_scope.cancel()
        await processes.close_spares()
        return spare, tree, process.returncode

    spare, tree, status = trio.run(main)
    assert status is not None and status != 0
    assert len(tree) == 2 and _wait_until_gone(tree) == []


NODE_WITH_SPARE = """\
import os, subprocess, sys
from functools import partial
from pathlib import Path
import trio
from peerfarm.renderers.base import renderer_environment
from peerfarm.runtime.renderer_processes import RendererProcesses

data_dir, pattern = sys.argv[1:]
command = [sys.executable, "-m", "peerfarm.renderers.builtin", "--scene-file", "builtin:demo",
           "--size", "1600x1200", "--output-pattern", pattern]

async def main():
    processes = RendererProcesses(Path(data_dir))
    env = renderer_environment(Path(data_dir))
    with open(Path(data_dir) / "chunk.log", "wb") as log:
        run = partial(processes.run, cwd=data_dir, env=env, stdout=subprocess.PIPE, stderr=log)
        async with trio.open_nursery() as nursery:  # a first, short chunk: a spare behind it
            process = await nursery.start(partial(run, [*command[:-4], "--size", "8x6",
                                                        *command[-2:], "--frames", "1"]))
            _ = [data async for data in process.stdout]
        while not processes._spares:
            await trio.sleep(0.02)
        async with trio.open_nursery() as nursery:  # a long one, in the spare
            process = await nursery.start(partial(run, [*command, "--frames", "1-48"]))
            print(f"GUARD {process.pid}", flush=True)
            while not processes._spares:
                await trio.sleep(0.02)
            print(f"SPARE {processes._spares[0][0].pid}", flush=True)
            async for data in process.stdout:
                pass

trio.run(main)
"""


def test_spare_guards_die_with_their_sigkilled_node_waiting_or_rendering(tmp_path):
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    node = subprocess.Popen(
        [sys.executable, "-c", NODE_WITH_SPARE, str(data_dir), str(tmp_path / "f_{frame:04d}.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert node.stdout is not None
        (guard,) = map(int, node.stdout.readline().split()[1:])
        (spare,) = map(int, node.stdout.readline().split()[1:])
        assert b"--spares" in _cmdline(guard) and b"--spares" in _cmdline(spare)
        deadline = time.monotonic() + DEADLINE
        while not _children(guard) and time.monotonic() < deadline:
            time.sleep(0.02)
        rendering = [guard, *_children(guard)]
        assert len(rendering) == 2
    finally:
        node.kill()
        node.wait()
    assert _wait_until_gone([*rendering, spare]) == []


# --- spares from the node's start ---------------------------------------------------------


async def _spares_waiting(processes: RendererProcesses, count: int) -> list[int]:
    with trio.fail_after(DEADLINE):
        while len(processes._spares) < count:
            await trio.sleep(0.02)
    return [process.pid for process, _ in processes._spares]


async def _chunk_in(
    processes: RendererProcesses, command: list[str], work: Path, log: Path
) -> tuple[int, list[bytes], bytes, int | None]:
    """Run one chunk as the worker does; (guard pid, its command line, stdout, status)."""
    with open(log, "wb") as stderr:
        async with trio.open_nursery() as nursery:
            run = partial(
                processes.run,
                command,
                cwd=work,
                env=renderer_environment(work),
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            process = await nursery.start(run)
            cmdline = _cmdline(process.pid)
            output = b"".join([data async for data in process.stdout])
    return process.pid, cmdline, output, process.returncode


def test_spares_started_ahead_take_the_first_chunks_and_end_when_closed(tmp_path, caplog):
    """start_spares keeps one spare per slot from the start: the very first chunks of
    a wrapper run in them, with the wrapper's module imported ahead, and render right.
    Closed, they end without a word (every node's stop said "spare factory ...:
    another task closed this fd")."""
    caplog.set_level(logging.INFO, logger="peerfarm.runtime.renderer_processes")
    work = tmp_path / "work"
    work.mkdir()

    async def main() -> tuple:
        processes = RendererProcesses(tmp_path)
        processes.start_spares([WRAPPER], 2, renderer_environment(tmp_path))
        ahead = await _spares_waiting(processes, 2)
        cmdlines = [_cmdline(pid) for pid in ahead]
        # At the node's priority, as their factory is: only what renders is lowered.
        assert processes._factory is not None
        factory = processes._factory.process.pid
        node_priority = os.getpriority(os.PRIO_PROCESS, 0)
        assert all(
            os.getpriority(os.PRIO_PROCESS, pid) == node_priority for pid in [factory, *ahead]
        )
        pattern = "out/f_{frame:04d}.png"
        first = await _chunk_in(
            processes, _builtin("1", "16x12", pattern), work, tmp_path / "1.log"
        )
        again = await _spares_waiting(processes, 2)  # topped up to the slots again
        await processes.close_spares()
        return ahead, cmdlines, first, again

    ahead, cmdlines, first, again = trio.run(main)
    assert all(b"--spares" in line and WRAPPER.encode() in line for line in cmdlines)
    assert first[0] in ahead and first[3] == 0 and b"FRAME 1" in first[2]
    assert (work / "out" / "f_0001.png").is_file()
    assert b"RuntimeWarning" not in (tmp_path / "1.log").read_bytes()  # run as main(), once
    assert _wait_until_gone([*ahead, *again]) == []
    assert not (tmp_path / RECORD_FILE).exists()
    assert not [r.getMessage() for r in caplog.records if "spare factory" in r.getMessage()]


def test_a_scenes_python_files_never_run_in_the_guard_or_the_wrapper(tmp_path):
    """The chunk runs in the job's folder, which the scene (and an earlier chunk's
    renderer) can fill: a json.py or a user site-packages there is never imported."""
    work = tmp_path / "work"
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'a').write('ran')\n"
    site = work / ".local" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (site / "site-packages").mkdir(parents=True)
    (site / "site-packages" / "evil.pth").write_text(f"import os; {code}")
    for name in ("json.py", "socket.py", "argparse.py", "runpy.py"):
        (work / name).write_text(code)

    async def main() -> list[tuple]:
        processes = RendererProcesses(tmp_path)
        pattern = "out/f_{frame:04d}.png"
        cold = await _chunk_in(processes, _builtin("1", "8x6", pattern), work, tmp_path / "1.log")
        await _spares_waiting(processes, 1)
        spare = await _chunk_in(processes, _builtin("2", "8x6", pattern), work, tmp_path / "2.log")
        await processes.close_spares()
        return [cold, spare]

    cold, spare = trio.run(main)
    assert b"--spares" not in cold[1] and b"--spares" in spare[1]
    assert cold[3] == 0 and spare[3] == 0
    assert not marker.exists()


NODE_WITH_SPARES_AHEAD = """\
import sys
from pathlib import Path
import trio
from peerfarm.renderers.base import renderer_environment
from peerfarm.runtime.renderer_processes import RendererProcesses

async def main():
    data_dir = Path(sys.argv[1])
    processes = RendererProcesses(data_dir)
    processes.start_spares(["peerfarm.renderers.povray.run"], 2, renderer_environment(data_dir))
    while len(processes._spares) < 2:
        await trio.sleep(0.02)
    pids = [processes._factory.process.pid, *(p.pid for p, _ in processes._spares)]
    print("SPARES", *pids, flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


def test_spares_started_ahead_die_with_their_sigkilled_node(tmp_path):
    node = subprocess.Popen(
        [sys.executable, "-c", NODE_WITH_SPARES_AHEAD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert node.stdout is not None
        spares = list(map(int, node.stdout.readline().split()[1:]))  # the factory's first
        assert len(spares) == 3 and all(b"--spares" in _cmdline(pid) for pid in spares)
    finally:
        node.kill()
        node.wait()
    assert _wait_until_gone(spares) == []


@pytest.mark.skipif(shutil.which("povray") is None, reason="needs povray (apt-get install povray)")
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_a_povray_chunk_in_a_spare_started_ahead_renders_as_a_fresh_guard_does(tmp_path):
    """The same POV-Ray chunk, once in a guard started for it and once handed to a spare
    started ahead (its wrapper imported and warmed up): the same frames, bit for bit."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "scene.pov").write_text(
        "camera { location <0, 1, -4> look_at 0 }\nlight_source { <2, 4, -3> rgb 1 }\n"
        "sphere { <clock, 0, 0>, 1 pigment { rgb <1, 0.5, 0.2> } }\n"
    )
    (work / "scene.ini").write_text(
        "Input_File_Name=scene.pov\nInitial_Frame=1\nFinal_Frame=4\n"
        "Initial_Clock=0\nFinal_Clock=1\n"
    )
    job = SimpleNamespace(main="scene.ini", options=[], width=32, height=24)
    plugin = PovrayRenderer()

    async def main() -> list[tuple]:
        results = []
        for kind in ("fresh", "spare"):
            processes = RendererProcesses(tmp_path / kind)
            (tmp_path / kind).mkdir()
            if kind == "spare":
                processes.start_spares([plugin.wrapper_module], 1, renderer_environment(work))
                await _spares_waiting(processes, 1)
            pattern = str(tmp_path / kind / "f_{frame:04d}.png")
            command = plugin.chunk_command(job, range(2, 4), work, pattern)
            log = tmp_path / kind / "chunk.log"
            results.append(await _chunk_in(processes, command, work, log))
            await processes.close_spares()
        return results

    fresh, spare = trio.run(main)
    assert b"--spares" not in fresh[1] and b"--spares" in spare[1]
    assert fresh[3] == 0 and spare[3] == 0
    assert spare[2].count(b"FRAME ") == 2
    for frame in (2, 3):  # the pixels: the PNGs hold when they were rendered (tIME, a comment)
        name = f"f_{frame:04d}.png"
        with Image.open(tmp_path / "spare" / name) as a, Image.open(tmp_path / "fresh" / name) as b:
            assert a.size == (32, 24) and a.tobytes() == b.tobytes()
    assert (tmp_path / "spare" / "f_0002.png").read_bytes() != (
        tmp_path / "spare" / "f_0003.png"
    ).read_bytes()  # the clock moved the sphere: not the same frame twice
    assert "Landlock" in (tmp_path / "spare" / "chunk.log").read_text()


def test_chunks_still_render_when_the_spare_factory_is_killed(tmp_path):
    """A killed spare factory can no longer tell its spares' ends: they are stopped and
    never handed a chunk; the next chunks start as before, and a new factory follows."""
    work = tmp_path / "work"
    work.mkdir()

    async def main() -> tuple:
        processes = RendererProcesses(tmp_path)
        processes.start_spares([WRAPPER], 1, renderer_environment(tmp_path))
        (old_spare,) = await _spares_waiting(processes, 1)
        assert processes._factory is not None
        old_factory = processes._factory.process.pid
        os.kill(old_factory, signal.SIGKILL)
        with trio.fail_after(DEADLINE):
            while not processes._factory.gone:
                await trio.sleep(0.02)
        pattern = "out/f_{frame:04d}.png"
        first = await _chunk_in(processes, _builtin("1", "8x6", pattern), work, tmp_path / "1.log")
        (new_spare,) = await _spares_waiting(processes, 1)
        second = await _chunk_in(processes, _builtin("2", "8x6", pattern), work, tmp_path / "2.log")
        new_factory = processes._factory.process.pid
        await processes.close_spares()
        return old_factory, old_spare, first, new_spare, second, new_factory

    old_factory, old_spare, first, new_spare, second, new_factory = trio.run(main)
    assert first[0] != old_spare and b"--spares" not in first[1] and first[3] == 0
    assert second[0] == new_spare and second[3] == 0 and new_factory != old_factory
    assert (work / "out" / "f_0001.png").is_file() and (work / "out" / "f_0002.png").is_file()
    assert _wait_until_gone([old_factory, old_spare, new_spare, new_factory]) == []
    assert not (tmp_path / RECORD_FILE).exists()


@pytest.mark.skipif(shutil.which("povray") is None, reason="needs povray (apt-get install povray)")
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_in_a_spare_povray_renders_at_low_priority_and_its_wrapper_at_the_nodes(tmp_path):
    """The spare and POV-Ray's wrapper keep the node's priority (their part between two
    renders must not wait behind other work); povray itself runs at RENDERER_NICENESS."""
    command = _slow_povray_chunk(tmp_path)
    plugin = PovrayRenderer()

    async def main() -> tuple[int, int, int, int]:
        processes = RendererProcesses(tmp_path)
        processes.start_spares([plugin.wrapper_module], 1, renderer_environment(tmp_path))
        (spare,) = await _spares_waiting(processes, 1)
        with open(tmp_path / "chunk.log", "wb") as stderr:
            async with trio.open_nursery() as nursery:
                run = partial(
                    processes.run,
                    command,
                    cwd=tmp_path / "work",
                    env=renderer_environment(tmp_path / "work"),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
                process = await nursery.start(run)
                with trio.fail_after(DEADLINE * 3):
                    async for data in process.stdout:
                        if b"START 1" in data:
                            break
                (wrapper,) = _children(process.pid)
                (povray,) = _children(wrapper)
                program = Path(f"/proc/{povray}/exe").resolve().name
                tree = [process.pid, wrapper, povray]
                priorities = [os.getpriority(os.PRIO_PROCESS, pid) for pid in tree]
                nursery.cancel_scope.cancel()  # the whole tree stops
        await processes.close_spares()
        return spare, tree, program, priorities

    spare, tree, program, priorities = trio.run(main)
    assert tree[0] == spare and program.startswith("povray")
    node_priority = os.getpriority(os.PRIO_PROCESS, 0)
    assert priorities == [node_priority, node_priority, RENDERER_NICENESS]
    assert _wait_until_gone(tree) == []


def test_a_cancelled_chunk_ends_even_when_its_spare_factory_is_frozen(tmp_path):
    """A spare factory stopped with SIGSTOP never reaps the spare the node kills nor
    tells its end: the spare's socket closing is taken as the chunk's end, so the slot
    is free again (before, the chunk waited until the factory ran again)."""
    pattern = str(tmp_path / "f_{frame:04d}.png")

    async def main() -> tuple[list[int], int | None, float]:
        processes = RendererProcesses(tmp_path)
        processes.start_spares([WRAPPER], 1, renderer_environment(tmp_path))
        (spare,) = await _spares_waiting(processes, 1)
        assert processes._factory is not None
        factory = processes._factory.process.pid
        run = partial(processes.run, cwd=tmp_path, env=renderer_environment(tmp_path))
        # Thawed at the latest after 2 * DEADLINE, so that a chunk still waiting for the
        # factory's word ends then (and fails the test) instead of hanging it.
        thaw = threading.Timer(2 * DEADLINE, os.kill, (factory, signal.SIGCONT))
        try:
            with open(tmp_path / "chunk.log", "wb") as stderr:
                async with trio.open_nursery() as nursery:
                    slow = _builtin("1-48", "1600x1200", pattern)  # minutes
                    process = await nursery.start(
                        partial(run, slow, stdout=subprocess.PIPE, stderr=stderr)
                    )
                    assert process.pid == spare
                    with trio.fail_after(DEADLINE):
                        while not _children(spare):
                            await trio.sleep(0.02)
                    tree = [spare, *_children(spare)]
                    os.kill(factory, signal.SIGSTOP)
                    thaw.start()
                    cancelled = time.monotonic()
                    nursery.cancel_scope.cancel()
            ended = time.monotonic() - cancelled
        finally:
            thaw.cancel()
            os.kill(factory, signal.SIGCONT)
        await processes.close_spares()
        return tree, process.returncode, ended

    tree, status, ended = trio.run(main)
    assert ended < DEADLINE, f"the chunk waited {ended:.1f} s for its frozen factory"
    assert status == -signal.SIGKILL
    assert len(tree) == 2 and _wait_until_gone(tree) == []
