"""`peerfarm doctor`: check a machine for running a node (and the app), say what to fix.

Each check returns findings: ok, warn (works, but not as well as it could),
fail (the node, or the app, will not work as set up) or skip (not checked, and
why), each with what was found and, when not ok, what to do. The checks run the
same code the node runs where there is such code (renderer probes, farm key
loading, the client handshake, the Qt plugin check `peerfarm gui` runs).
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from peerfarm.ops import qt_platform
from peerfarm.programs import PROGRAMS, find_program, where_from
from peerfarm.renderers.base import Renderer
from peerfarm.renderers.registry import renderer_plugins
from peerfarm.runtime.addresses import advertised_host, format_address, is_loopback
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.discovery import SERVICE_TYPE
from peerfarm.security.farm_key import (
    ENV_VAR,
    FarmKey,
    FarmKeyError,
    default_key_path,
    load_key,
    resolve_key,
)

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
GIB = 1024**3
DISK_FAIL_BYTES = 1 * GIB  # less free than this: frames and scenes will not fit
DISK_WARN_BYTES = 10 * GIB
NETWORK_TIMEOUT = 5.0

# How to install a renderer that was not found (a plugin of another package: its docs).
RENDERER_HINTS = {
    "povray": "install POV-Ray 3.7: on Debian/Ubuntu `sudo apt install povray`; on Fedora "
    "`sudo dnf install povray` (docs/povray.md)",
    "blender": "install Blender (on Debian/Ubuntu `sudo apt install blender`, on Fedora "
    "`sudo dnf install blender`, or from blender.org); one installed elsewhere than the PATH "
    'or its usual place: set `blender = "PATH"` in the config file (docs/blender.md)',
}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    text: str
    fix: str = ""


@dataclass
class Subject:
    """What to check: the settings `peerfarm node` would run with."""

    listen: tuple[str, int]
    data_dir: Path
    farm_key_file: Path | None = None
    farm_key_source: str = "farm-key-file"  # where that setting came from
    bootstraps: tuple[tuple[str, int], ...] = ()
    advertise: str = ""  # --advertise: the address peers dial, when set
    zeroconf: bool = True
    metrics: tuple[str, int] | None = None
    offline: bool = False  # skip the checks that use the network
    app: bool = True  # check the desktop app too


# -- renderers ------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _warnings_of(logger: str) -> Iterator[_Collect]:
    """What a renderer plugin logs while probed: why it is not offered."""
    handler = _Collect()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler
    finally:
        target.removeHandler(handler)


def check_renderers(plugins: dict[str, Renderer] | None = None) -> list[Finding]:
    """Every renderer plugin: its version here, or why it is not offered and what to do."""
    plugins = renderer_plugins() if plugins is None else plugins
    found = []
    for name, plugin in sorted(plugins.items()):
        with _warnings_of("peerfarm") as said:
            try:
                version = plugin.probe()
            except Exception as exc:
                version = None
                said.messages.append(f"probing it failed: {exc}")
        if version:
            found.append(Finding("renderers", OK, f"{name} {version[:64]}"))
            continue
        why = "; ".join(said.messages) or "not found on the PATH or in its usual places"
        hint = RENDERER_HINTS.get(name, f"see the documentation of the {name} renderer plugin")
        found.append(
            Finding(
                "renderers",
                WARN,
                f"{name}: not offered ({why}); this node takes no {name} jobs",
                hint,
            )
        )
    return found


def check_programs() -> list[Finding]:
    """Where Blender, POV-Ray and ffmpeg were found (peerfarm/programs.py), or where
    they were looked for."""
    found = []
    for program in PROGRAMS:
        path = find_program(program)
        if path is not None:
            found.append(Finding("programs", OK, f"{program}: {path}"))
        else:
            found.append(
                Finding(
                    "programs",
                    WARN,
                    f"{program}: not found (looked at: {where_from(program)})",
                    f'install it, or set its location: `{program} = "PATH"` in the config '
                    f"file's [node] table or --{program} PATH",
                )
            )
    return found


def check_address(subject: Subject) -> Finding:
    """The address the node would tell peers to dial, and why (runtime/addresses.py)."""
    host, port = subject.listen
    if subject.advertise:
        return Finding("address", OK, f"peers dial this node at {subject.advertise} (--advertise)")
    chosen, why = advertised_host(host, [h for h, _ in subject.bootstraps])
    address = format_address(chosen, port)
    if is_loopback(chosen) and not is_loopback(host):
        return Finding(
            "address",
            WARN,
            f"peers would dial this node at {address}: {why}; no other machine can reach it",
            "connect this machine to the network, or set --advertise HOST:PORT "
            "(`advertise` in the config file) to the address other machines reach it at",
        )
    return Finding("address", OK, f"peers dial this node at {address} ({why})")


# -- the farm key -------------------------------------------------------------------


def check_farm_key(
    option: Path | None, listen_host: str, source: str = "farm-key-file"
) -> list[Finding]:
    """The key the node would use (as resolve_key picks it), readable, private;
    ``source`` says where the option's value came from."""
    if option is not None:
        path = option
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    elif default_key_path().exists():
        path, source = default_key_path(), "the default place"
    else:
        if not is_loopback(listen_host):
            return [
                Finding(
                    "farm key",
                    FAIL,
                    f"no farm key, and the node is set to listen on {listen_host}: it "
                    "refuses to start (without a key it serves this machine only)",
                    f"copy the farm's key file to {default_key_path()} or set farm-key-file "
                    "(create a farm with `peerfarm init`)",
                )
            ]
        return [
            Finding(
                "farm key",
                WARN,
                "no farm key: the node serves this machine only (loopback)",
                f"to join a farm, copy its key file to {default_key_path()} or set "
                "farm-key-file in the config file; to create one, `peerfarm init`",
            )
        ]
    try:
        key: FarmKey = load_key(path)
    except FarmKeyError as exc:
        fix = ""
        if "does not exist" not in str(exc):  # its own message says what to do then
            fix = (
                "give the user running the node read access to the file (e.g. `chmod 640 "
                f"{path}` with the service user's group), or copy it again from a machine "
                "of the farm"
            )
        return [Finding("farm key", FAIL, f"{exc} (from {source})", fix)]
    found = [Finding("farm key", OK, f"{path} (from {source}), key id {key.key_id}")]
    if os.name == "posix":
        mode = os.stat(path).st_mode
        if mode & 0o004:
            found.append(
                Finding(
                    "farm key",
                    WARN,
                    f"{path} is readable by every user of this machine (mode {mode & 0o777:o})",
                    f"`chmod 600 {path}` (or 640 with the group of a service user)",
                )
            )
    return found


# -- ports --------------------------------------------------------------------------


def port_free(address: tuple[str, int]) -> OSError | None:
    """Try to listen where the node would (as trio's listeners do); the error, if any."""
    host, port = address
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"{host}: {exc}")
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
            sock.listen(1)
        except OSError as exc:
            return exc
    return None


async def _node_at(address: str, farm_key: FarmKey | None) -> dict | None:
    """The status of the peerfarm node listening at ``address``, if it is one."""
    with trio.move_on_after(NETWORK_TIMEOUT):
        try:
            async with NodeClient(address, farm_key) as client:
                return await client.status()
        except ClientError:
            return None
    return None


async def check_port(
    what: str, address: tuple[str, int], farm_key: FarmKey | None, option: str
) -> Finding:
    host, port = address
    shown = format_address(host, port)
    if port == 0:
        return Finding("ports", SKIP, f"{what}: port 0 (any free port)")
    problem = port_free(address)
    if problem is None:
        return Finding("ports", OK, f"{what}: {shown} is free")
    if problem.errno == errno.EADDRINUSE:
        near = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        running = await _node_at(format_address(near, port), farm_key) if what == "node" else None
        if running is not None:
            return Finding(
                "ports",
                WARN,
                f"{what}: {shown} is in use by the peerfarm {running.get('role', 'node')} "
                f"{running.get('name', '?')} ({str(running.get('node_id', ''))[:12]}): one "
                "runs here already, and a second cannot listen on that port",
                f"that is fine if it is this machine's service; for another node here, "
                f"give it another port ({option})",
            )
        return Finding(
            "ports",
            FAIL,
            f"{what}: {shown} is in use by another program",
            f"stop that program (`ss -ltnp 'sport = :{port}'` names it) or choose another "
            f"port ({option})",
        )
    if problem.errno in (errno.EACCES, errno.EPERM):
        return Finding(
            "ports",
            FAIL,
            f"{what}: not allowed to listen on {shown} ({problem.strerror})",
            f"use a port above 1024 ({option})",
        )
    return Finding(
        "ports",
        FAIL,
        f"{what}: cannot listen on {shown} ({problem.strerror or problem})",
        f"is {host} an address of this machine? ({option})",
    )


# -- the network --------------------------------------------------------------------


async def check_bootstrap(address: tuple[str, int], farm_key: FarmKey | None) -> Finding:
    shown = format_address(*address)
    try:
        with trio.fail_after(NETWORK_TIMEOUT * 2):
            async with NodeClient(shown, farm_key) as client:
                status = await client.status()
    except ClientError as exc:
        return Finding(
            "bootstrap",
            FAIL,
            f"{shown}: {exc}",
            "check the address, that `peerfarm bootstrap` runs there, that a firewall lets "
            "TCP to that port through, and that both machines hold the same farm key",
        )
    except trio.TooSlowError:
        return Finding(
            "bootstrap",
            FAIL,
            f"{shown}: no answer within {NETWORK_TIMEOUT * 2:.0f}s",
            "is the server overloaded, or a firewall dropping the connection?",
        )
    peers = len(status.get("peers", []))
    if status.get("role") != "bootstrap":
        return Finding(
            "bootstrap",
            WARN,
            f"{shown}: answers, but is a {status.get('role')} ({status.get('name')}), not a "
            "bootstrap server: it does not hand joining nodes the farm's members",
            "give the address of a `peerfarm bootstrap` server",
        )
    return Finding(
        "bootstrap",
        OK,
        f"{shown}: bootstrap server {status.get('name')} answers (same farm key), "
        f"knows {peers} peer(s)",
    )


def _zeroconf_round_trip() -> str:
    """Announce a throwaway service and find it again through a second zeroconf
    instance (multicast out and back in); then count peerfarm nodes on the LAN."""
    from zeroconf import ServiceBrowser, ServiceInfo, Zeroconf

    kind = "_peerfarm-doctor._tcp.local."
    name = f"doctor-{uuid.uuid4().hex[:12]}.{kind}"
    announcer = Zeroconf()
    try:
        info = ServiceInfo(kind, name, addresses=[socket.inet_aton("127.0.0.1")], port=9)
        announcer.register_service(info, ttl=60)
        listener = Zeroconf()
        try:
            found = listener.get_service_info(kind, name, timeout=3000)
            if found is None:
                raise OSError("a service announced here was not heard back (multicast blocked?)")
            nodes: set[str] = set()
            lock = threading.Lock()

            def seen(zeroconf, service_type, name, state_change) -> None:  # noqa: ANN001
                with lock:
                    nodes.add(name)

            ServiceBrowser(listener, SERVICE_TYPE, handlers=[seen])
            time.sleep(1.5)
            with lock:
                return f"mDNS works; {len(nodes)} peerfarm node(s) announce themselves on the LAN"
        finally:
            listener.close()
    finally:
        try:
            announcer.unregister_service(info)
        finally:
            announcer.close()


async def check_zeroconf(enabled: bool, has_bootstraps: bool) -> Finding:
    if not enabled:
        return Finding("LAN discovery", SKIP, "off in the settings (no-zeroconf)")
    try:
        text = await trio.to_thread.run_sync(_zeroconf_round_trip)
    except Exception as exc:
        return Finding(
            "LAN discovery",
            WARN if has_bootstraps else FAIL,
            f"zeroconf does not work here: {exc}"
            + ("" if has_bootstraps else "; with no bootstrap server set, this node finds nobody"),
            "allow mDNS (UDP port 5353, multicast 224.0.0.251) in the firewall, or give the "
            'nodes a bootstrap server (bootstrap = ["HOST:7000"] in [node])',
        )
    return Finding("LAN discovery", OK, text)


# -- the machine --------------------------------------------------------------------


def clock_synchronized() -> bool | None:
    """Linux: whether the kernel says NTP keeps the clock in step (adjtimex), None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5  # TIME_ERROR: the clock is not synchronized


def check_clock() -> Finding:
    now = time.time()
    if now < 1_704_067_200:  # 2024-01-01: this release did not exist before
        return Finding(
            "clock",
            FAIL,
            f"the clock says {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))} UTC",
            "set the date and enable time synchronization (`timedatectl set-ntp true`)",
        )
    synced = clock_synchronized()
    shown = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    if synced is False:
        return Finding(
            "clock",
            WARN,
            f"{shown} UTC, not synchronized (NTP): log times of machines disagree",
            "enable time synchronization (`timedatectl set-ntp true`, or chrony/ntpd); the "
            "farm itself orders by Lamport clocks and does not need it",
        )
    state = "synchronized" if synced else "synchronization not checked on this system"
    return Finding("clock", OK, f"{shown} UTC, {state}")


def check_data_dir(data_dir: Path) -> list[Finding]:
    try:
        return _check_data_dir(data_dir)
    except OSError as exc:  # e.g. a folder on the way this user may not enter
        return [
            Finding(
                "data dir",
                FAIL,
                f"{data_dir}: {exc.strerror or exc} ({exc.filename or data_dir})",
                "give the user running the node access to it, or choose another (data-dir)",
            )
        ]


def _check_data_dir(data_dir: Path) -> list[Finding]:
    existing = data_dir
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent  # os.path.exists: False also where we may not look
    found = []
    if not os.path.exists(data_dir):
        if not os.access(existing, os.W_OK | os.X_OK):
            return [
                Finding(
                    "data dir",
                    FAIL,
                    f"{data_dir} cannot be created: {existing} is not writable by this user "
                    "(or a folder on the way may not be entered)",
                    "create it for the user running the node, or choose another (data-dir)",
                )
            ]
        found.append(Finding("data dir", OK, f"{data_dir} (created at the first start)"))
    elif not os.path.isdir(data_dir):
        return [Finding("data dir", FAIL, f"{data_dir} is not a folder", "choose another")]
    else:
        probe = data_dir / f".doctor-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return [
                Finding(
                    "data dir",
                    FAIL,
                    f"{data_dir} is not writable ({exc.strerror})",
                    "give the user running the node write access, or choose another (data-dir)",
                )
            ]
        log_file = data_dir / "log.bin"
        log_size = log_file.stat().st_size if os.path.exists(log_file) else 0
        found.append(Finding("data dir", OK, f"{data_dir}, log {log_size / 1e6:.1f} MB"))
    usage = shutil.disk_usage(existing)
    free = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.1f} GiB at {existing}"
    if usage.free < DISK_FAIL_BYTES:
        found.append(
            Finding("disk", FAIL, free, "free space: frames, scenes and the log live there")
        )
    elif usage.free < DISK_WARN_BYTES:
        found.append(Finding("disk", WARN, free, "big jobs need room for their frames and scenes"))
    else:
        found.append(Finding("disk", OK, free))
    return found


def check_desktop_app(env: dict[str, str] | None = None) -> list[Finding]:
    """Whether `peerfarm gui` can open a window here (the check it runs, then a real
    load of the platform plugin in a child process when there is a display)."""
    env = dict(os.environ if env is None else env)
    if qt_platform.platforms_dir(env) is None and importlib.util.find_spec("PySide6") is None:
        return [
            Finding(
                "desktop app",
                SKIP,
                "not installed (no PySide6); headless nodes do not need it",
                "for the app: pip install 'peerfarm[gui]'",
            )
        ]
    result = qt_platform.check_platform_plugin(env)
    display = qt_platform.has_display(env)
    # Without a display the app is not run here now: a headless node does not need it.
    level = FAIL if display else WARN
    if not result.ok:
        return [_app_problem(result, level)]
    if not qt_platform.linux() or result.platform in ("offscreen", "minimal"):
        return [Finding("desktop app", OK, result.detail)]
    if not display:
        return [
            Finding(
                "desktop app",
                OK,
                f"{result.detail}; no display here to open a window on (DISPLAY is not set)",
            )
        ]
    loaded = qt_platform.try_loading(result.platform, env)
    if loaded.ok:
        return [Finding("desktop app", OK, f"{result.detail}; {loaded.detail}")]
    return [_app_problem(loaded, FAIL)]


def _app_problem(result: qt_platform.QtPlatformCheck, level: str) -> Finding:
    if not result.missing:
        return Finding("desktop app", level, result.problem)
    return Finding(
        "desktop app",
        level,
        f"cannot open a window: Qt's {result.platform!r} platform plugin needs system "
        f"libraries that are not installed: {', '.join(result.missing)}",
        qt_platform.install_hint(result.missing),
    )


# -- all of them --------------------------------------------------------------------


async def diagnose(subject: Subject) -> list[Finding]:
    findings = await trio.to_thread.run_sync(check_renderers)
    findings += await trio.to_thread.run_sync(check_programs)
    key_findings = check_farm_key(subject.farm_key_file, subject.listen[0], subject.farm_key_source)
    findings += key_findings
    try:
        farm_key = resolve_key(subject.farm_key_file)  # as the node picks it
    except FarmKeyError:
        farm_key = None
    findings.append(await check_port("node", subject.listen, farm_key, "--listen HOST:PORT"))
    findings.append(await trio.to_thread.run_sync(check_address, subject))
    if subject.metrics is not None:
        findings.append(
            await check_port("metrics", subject.metrics, farm_key, "--metrics [HOST:]PORT")
        )
    if subject.offline:
        findings.append(Finding("bootstrap", SKIP, "--offline"))
        findings.append(Finding("LAN discovery", SKIP, "--offline"))
    else:
        if not subject.bootstraps:
            findings.append(
                Finding("bootstrap", SKIP, "no bootstrap server set (LAN discovery only)")
            )
        for address in subject.bootstraps:
            findings.append(await check_bootstrap(address, farm_key))
        findings.append(await check_zeroconf(subject.zeroconf, bool(subject.bootstraps)))
    findings.append(check_clock())
    findings += await trio.to_thread.run_sync(check_data_dir, subject.data_dir)
    if subject.app:
        findings += await trio.to_thread.run_sync(check_desktop_app)
    return findings


def report(findings: list[Finding]) -> str:
    width = max(len(f.check) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{f.status:<5} {f.check:<{width}}  {f.text}")
        if f.fix and f.status in (WARN, FAIL):
            lines.append(f"{'':<5} {'':<{width}}  -> {f.fix}")
    fails = sum(f.status == FAIL for f in findings)
    warns = sum(f.status == WARN for f in findings)
    lines.append("")
    if fails:
        lines.append(f"{fails} problem(s) to fix, {warns} warning(s).")
    else:
        lines.append(f"no problems found, {warns} warning(s).")
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]
