"""The renderer guard: the process between a node and one renderer (POSIX).

    python -m peerfarm.runtime.renderer_guard --watch-fd FD [--niceness N] -- COMMAND...
    python -m peerfarm.runtime.renderer_guard --watch-fd FD [--niceness N] --spares MODULE,...

The node starts it in a session of its own (peerfarm.child_processes.renderer_options),
so the guard leads a process group holding the renderer and all it starts, out of the
terminal's reach. The guard starts COMMAND at niceness N on the guard's own stdin,
stdout and stderr (the guard itself keeps the node's priority), waits for it and exits
with its exit status. Besides:

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
- With --spares MODULE,... instead of -- COMMAND, it is the node's *spare factory*
  (one per node): it imports the wrapper MODULEs (and does what they `warm_up`), then
  forks a *spare guard* whenever the node asks on its stdin, a Unix socket (`_serve_
  spares`): a process of its own session with all of that imported, which waits on
  its own stdin socket for the command, folder and environment to run with and the
  file descriptor of its stderr (`send_command`), then goes on as a guard started
  for that chunk would. A chunk thus waits for no Python start-up, and a spare costs
  a fork instead of an interpreter's start and imports (docs/performance.md).
- When COMMAND is one of peerfarm's own wrappers (`python -m peerfarm.renderers...`,
  this very interpreter), the guard forks and runs the module in the child instead of
  starting a second interpreter: the same process tree (guard, wrapper, renderer) and
  the same ties, without paying Python's start-up twice per chunk (docs/performance.md).
  A module already imported (a spare's) is not run again: its `main(argv)` is called.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from types import FrameType

from peerfarm.child_processes import (
    RENDERER_NICENESS,
    die_with_parent,
    lower_priority,
    start_tied_child,
)

PROG = "peerfarm-renderer-guard"
MODULE = "peerfarm.runtime.renderer_guard"
EXIT_USAGE = 2
EXIT_CANNOT_RUN = 127  # what a shell says when it cannot run a command
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")
WRAPPERS = "peerfarm.renderers."  # peerfarm's own renderer wrappers: run in a fork


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


def forks_wrappers() -> bool:
    """Whether guards run peerfarm's wrappers in a fork of themselves, and so can be
    started as spares: POSIX, not a frozen build (whose executable is the app)."""
    return sys.platform != "win32" and not getattr(sys, "frozen", False)


def factory_command(
    modules: Sequence[str], watch_fd: int, niceness: int = RENDERER_NICENESS
) -> list[str]:
    """The command line of a node's spare factory: the wrapper `modules` imported, it
    forks spare guards on request (`_serve_spares`); any wrapper's chunk can take one."""
    return [
        sys.executable,
        "-m",
        MODULE,
        "--watch-fd",
        str(watch_fd),
        "--niceness",
        str(niceness),
        "--spares",
        ",".join(modules),
    ]


def send_command(
    sock: socket.socket, command: Sequence[str], cwd: str, env: dict[str, str], stderr_fd: int
) -> None:
    """Tell a spare guard what to run: the command, its folder, its environment, and
    (passed as a file descriptor) where its stderr goes. Blocking; the message is small."""
    if sys.platform == "win32":
        raise RuntimeError("spare renderer guards are POSIX only")
    text = json.dumps({"command": list(command), "cwd": cwd, "env": env}).encode()
    socket.send_fds(sock, [text], [stderr_fd])
    sock.shutdown(socket.SHUT_WR)


def _serve_spares(watch_fd: int) -> None:
    """The spare factory's loop. Each request on stdin (a Unix socket) brings two file
    descriptors, the new spare's stdin (a socket) and stdout (a pipe): fork (the
    spare has the factory's priority, the node's), answer `P PID`. Each spare that ended is
    reaped and told: `E PID STATUS` (Popen's returncode: -N when killed by signal
    N), in the order they happen. Returns in the forked spare only, in a session of
    its own with those as stdin and stdout; the factory itself exits at end of file
    on stdin (the node closed it) or on `watch_fd` (the node process is gone).
    """
    if sys.platform == "win32":
        raise RuntimeError("spare renderer guards are POSIX only")
    control = socket.socket(fileno=os.dup(0))
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)  # a SIGCHLD wakes the poll below
    signal.signal(signal.SIGCHLD, _keep_waiting)
    poller = select.poll()
    for fd in (control.fileno(), wake_read, watch_fd):
        poller.register(fd, select.POLLIN)
    while True:
        readable = [fd for fd, _ in poller.poll()]  # (any fd number, unlike select)
        if watch_fd in readable:
            os._exit(0)  # never written to: readable means end of file, the node is gone
        if wake_read in readable:
            os.read(wake_read, 4096)
            for pid, status in _reap():
                control.sendall(f"E {pid} {status}\n".encode())
        if control.fileno() in readable:
            request, fds, _, _ = socket.recv_fds(control, 16, 2)
            if not request:
                os._exit(0)  # the node closed its spares
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:  # the spare: drop the factory's parts, take its own stdin and stdout
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (wake_read, wake_write):
                    os.close(fd)
                control.close()
                os.setsid()  # the group the node signals to stop this chunk's tree
                os.dup2(fds[0], 0)
                os.dup2(fds[1], 1)
                for fd in fds:
                    os.close(fd)
                # As a guard started on that pipe has it (the factory's was /dev/null:
                # a seekable file, which a pipe is not).
                sys.stdout = open(  # noqa: SIM115 (for as long as the process lives)
                    1, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, closefd=False
                )
                return
            for fd in fds:
                os.close(fd)
            control.sendall(f"P {pid}\n".encode())


def _reap() -> list[tuple[int, int]]:
    """The factory's spares that ended: (pid, status as Popen's returncode)."""
    if sys.platform == "win32":
        raise RuntimeError("spare renderer guards are POSIX only")
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))


def _receive_command() -> tuple[list[str], socket.socket] | None:
    """A spare guard: wait for what to run on stdin (a Unix socket), take on its
    folder, environment and stderr; the command, and the socket to tell the node the
    exit status on (`_tell_status`). None when the node closed the socket instead."""
    if sys.platform == "win32":
        raise RuntimeError("spare renderer guards are POSIX only")
    sock = socket.socket(fileno=os.dup(0))
    data = b""
    fds: list[int] = []
    while True:
        part, got, _, _ = socket.recv_fds(sock, 1 << 20, 1)
        fds += got
        if not part:
            break
        data += part
    if not data or len(fds) != 1:
        sock.close()
        return None
    order = json.loads(data)
    sys.stderr.flush()
    os.dup2(fds[0], 2)
    os.close(fds[0])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # a renderer reads nothing from its node
    os.close(devnull)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    tempfile.tempdir = None  # TMPDIR is the job's now
    return [str(word) for word in order["command"]], sock


def _tell_status(sock: socket.socket, status: int) -> None:
    """A spare guard about to exit with `status`: tell the node at once, which would
    otherwise hear it from the spare factory once that has woken up and reaped us."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        sock.sendall(str(status & 0xFF).encode())
    except OSError:
        pass  # the node is gone, or hears it from the factory


def _parse(argv: list[str]) -> tuple[int, int, list[str], str | None]:
    """(watch fd, niceness, command, spare's module); a spare has no command yet."""
    split = argv.index("--") if "--" in argv else len(argv)
    options, command = argv[:split], argv[split + 1 :]
    values = dict(zip(options[::2], options[1::2], strict=False))
    known = {"--watch-fd", "--niceness", "--spares"}
    if len(options) % 2 or set(values) - known or "--watch-fd" not in values:
        raise ValueError(
            f"expected --watch-fd FD [--niceness N] [--spares MODULE,...], got {' '.join(options)}"
        )
    spare = values.get("--spares")
    if spare is None and not command:
        raise ValueError("expected -- COMMAND...")
    if spare is not None and command:
        raise ValueError("spare guards get their command later, not after --")
    watch_fd = int(values["--watch-fd"])
    return watch_fd, int(values.get("--niceness", RENDERER_NICENESS)), command, spare


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


def wrapper_module(command: Sequence[str]) -> str | None:
    """The module of `command` when it is `python -m peerfarm.renderers.X ...` run by
    this very interpreter (not in a frozen build, whose executable is the app)."""
    if getattr(sys, "frozen", False) or len(command) < 3:
        return None
    if command[0] != sys.executable or command[1] != "-m":
        return None
    return command[2] if command[2].startswith(WRAPPERS) else None


def _fork_wrapper(module: str, args: Sequence[str], niceness: int) -> Callable[[], int]:
    """Run `python -m module args` in a fork of this process (no threads run yet);
    a function that waits for it and returns its status as Popen.wait does (-N:
    killed by signal N). A module a spare imported already runs as its `main(argv)`:
    executing its code again would only redo its imports' and definitions' work.

    The fork takes `niceness` at once, unless the module (imported already) says
    LOWERS_RENDERER_PRIORITY: it renders in a program it starts at that niceness
    itself (povray, blender), and stays at the node's priority, so that its own part
    (starting the program, moving the last frame) waits behind no one's work."""
    if sys.platform == "win32":
        raise RuntimeError("the renderer guard is POSIX only")
    tie = die_with_parent()  # Linux: dies with the guard, as start_tied_child's children
    loaded = sys.modules.get(_main_module(module))
    pid = os.fork()
    if pid == 0:  # the child: never returns into the guard's code
        code = 1
        try:
            if tie is not None:
                tie()
            if not getattr(loaded, "LOWERS_RENDERER_PRIORITY", False):
                lower_priority(niceness)  # it may render itself (the built-in renderer)
            # As a fresh interpreter has them: the guard's handlers are not the wrapper's.
            for name in STOP_SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.argv = [module, *args]
            main = getattr(loaded, "main", None)
            if callable(main):
                code = _exit_code(main(list(args)))
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            os._exit(code)

    def wait() -> int:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except InterruptedError:
                continue
            return os.waitstatus_to_exitcode(status)

    return wait


def _warm_up(modules: Sequence[str]) -> None:
    """A spare: import the wrapper modules the forked wrapper will run, and do what
    their `warm_up()` does ahead (work the same for every chunk of this node)."""
    for name in modules:
        if not name.startswith(WRAPPERS):
            continue  # only peerfarm's own wrappers run in a fork
        try:
            importlib.import_module(name)
            module = importlib.import_module(_main_module(name))
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                warm_up()
        except Exception:  # the wrapper says what is wrong when it runs
            pass


def _main_module(name: str) -> str:
    """What `python -m name` runs: the module, or a package's __main__ (of a package
    imported already)."""
    return f"{name}.__main__" if hasattr(sys.modules.get(name), "__path__") else name


def _exit_code(code: object) -> int:
    """The status `sys.exit(code)` ends a Python process with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    if sys.platform == "win32":
        print(f"{PROG}: error: POSIX only (Windows uses job objects)", file=sys.stderr)
        return EXIT_USAGE
    try:
        watch_fd, niceness, command, spare = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), _keep_waiting)
    if os.getpgrp() != os.getpid():
        os.setsid()  # never signal the group of whoever started us: lead our own
    # The guard itself (a factory, a spare) keeps the node's priority: its part between
    # two renders is a few ms of CPU that, at niceness 10 on a busy machine, waits for
    # a core behind everyone's normal-priority work. What renders is lowered before it
    # runs (_fork_wrapper, start_tied_child).
    if spare is not None:
        _warm_up(spare.split(","))
        _serve_spares(watch_fd)  # returns in a spare guard only, forked for a chunk
    report = None
    if spare is not None:
        received = _receive_command()
        if received is None:
            return 0  # not needed after all (the node stopped, or closed its spares)
        command, report = received
    try:
        # Linux: the renderer also dies with the guard (SIGKILL of the guard alone).
        module = wrapper_module(command)
        if module is not None:
            wait = _fork_wrapper(module, command[3:], niceness)
        else:
            wait = start_tied_child(command, niceness=niceness).wait
    except OSError as exc:
        print(f"{PROG}: error: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    # After the fork: a child forked while other threads run may inherit held locks.
    threading.Thread(target=_end_group_when_node_ends, args=(watch_fd,), daemon=True).start()
    status = wait()
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
    if report is not None:
        _tell_status(report, status)
    return status


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown (tens of ms at low priority on a busy machine): the next
    # chunk of this slot waits for this exit. Nothing here needs cleaning up.
    os._exit(code & 0xFF)  # as sys.exit(code) would
