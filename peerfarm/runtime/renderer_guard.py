"""The renderer guard: the process between a node and one renderer (POSIX).

    python -m peerfarm.runtime.renderer_guard --watch-fd FD [--niceness N] -- COMMAND...

The node starts it in a session of its own (peerfarm.child_processes.renderer_options),
so the guard leads a process group holding the renderer and all it starts, out of the
terminal's reach. The guard lowers its priority (the renderer inherits it), starts
COMMAND on the guard's own stdin, stdout and stderr, waits for it and exits with its
exit status. Besides:

- FD is the read end of a pipe whose write end only the node process holds. It reaches
  end of file when the node process ends, however it ends (SIGKILL too): the guard then
  kills its process group, so the renderer tree dies with its node. The node cannot do
  this itself: PR_SET_PDEATHSIG follows the thread that forked (trio forks in worker
  threads that come and go), and macOS has no such thing.
- When the renderer ends by a signal, what it started may still run (a wrapper killed
  with SIGKILL leaves its povray or blender; on macOS nothing else stops them): the guard
  says on stderr which signal ended the renderer and kills its process group, itself
  included, so the node sees the renderer's status as SIGKILL.
- SIGTERM, SIGINT and SIGHUP do not stop the guard: the node stops a renderer by
  signalling the whole process group, and the guard waits to pass on the exit status.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from peerfarm.child_processes import RENDERER_NICENESS, lower_priority, start_tied_child

PROG = "peerfarm-renderer-guard"
MODULE = "peerfarm.runtime.renderer_guard"
EXIT_USAGE = 2
EXIT_CANNOT_RUN = 127  # what a shell says when it cannot run a command


def guarded_command(
    command: Sequence[str], watch_fd: int, niceness: int = RENDERER_NICENESS
) -> list[str]:
    """The command line that runs `command` under a guard watching `watch_fd`.

    sys.executable is the packaged app in a frozen build; it runs `-m MODULE` too.
    """
    return [
        sys.executable,
        "-m",
        MODULE,
        "--watch-fd",
        str(watch_fd),
        "--niceness",
        str(niceness),
        "--",
        *command,
    ]


def _parse(argv: list[str]) -> tuple[int, int, list[str]]:
    if "--" not in argv:
        raise ValueError("expected -- COMMAND...")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    values = dict(zip(options[::2], options[1::2], strict=False))
    if len(options) % 2 or set(values) - {"--watch-fd", "--niceness"} or "--watch-fd" not in values:
        raise ValueError(f"expected --watch-fd FD [--niceness N], got {' '.join(options)}")
    if not command:
        raise ValueError("no command after --")
    return int(values["--watch-fd"]), int(values.get("--niceness", RENDERER_NICENESS)), command


def _end_group_when_node_ends(fd: int) -> None:
    """Wait for end of file on `fd` (the node process is gone), then kill the group."""
    if sys.platform == "win32":
        raise RuntimeError("the renderer guard is POSIX only")
    while True:
        try:
            if not os.read(fd, 4096):
                break
        except OSError:  # not readable at all: as good as gone
            break
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _keep_waiting(_signum: int, _frame: FrameType | None) -> None:
    """Stop signals reach the whole group: the renderer acts on them, the guard waits.

    A handler rather than SIG_IGN: an ignored signal would stay ignored in the renderer.
    """


def main(argv: list[str] | None = None) -> int:
    if sys.platform == "win32":
        print(f"{PROG}: error: POSIX only (Windows uses job objects)", file=sys.stderr)
        return EXIT_USAGE
    try:
        watch_fd, niceness, command = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), _keep_waiting)
    if os.getpgrp() != os.getpid():
        os.setsid()  # never signal the group of whoever started us: lead our own
    lower_priority(niceness)
    try:
        # Linux: the renderer also dies with the guard (SIGKILL of the guard alone).
        child = start_tied_child(command)
    except OSError as exc:
        print(f"{PROG}: error: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    threading.Thread(target=_end_group_when_node_ends, args=(watch_fd,), daemon=True).start()
    status = child.wait()
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        print(
            f"{PROG}: the renderer was killed by {name}; stopping what it left running",
            file=sys.stderr,
            flush=True,
        )
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return status


if __name__ == "__main__":
    sys.exit(main())
