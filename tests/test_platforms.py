"""Windows, macOS and Linux decisions, each with the platform as a parameter (there is no
Windows or macOS machine here), and what can be run for real on this Linux machine."""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

import pytest
import trio

from peerfarm.core.names import is_safe_name, safe_name
from peerfarm.disk import long_path, replace_file
from peerfarm.ops.logs import LOG_FILE_BACKUPS, LOG_FILE_BYTES, setup_logging
from peerfarm.ops.places import (
    move_out_of_roaming,
    roaming_data_root,
    user_data_root,
    user_log_dir,
)
from peerfarm.programs import env_var, find_program, standard_places
from peerfarm.renderers.base import renderer_environment
from peerfarm.runtime.addresses import (
    LAN_PROBE,
    advertised_host,
    is_loopback,
    parse_address,
    route_source,
)
from peerfarm.runtime.keep_awake import KeepAwake, holder_command

# -- where Blender, POV-Ray and ffmpeg are ----------------------------------------------

WINDOWS_ENV = {
    "ProgramFiles": "C:\\Program Files",
    "ProgramFiles(x86)": "C:\\Program Files (x86)",
    "LOCALAPPDATA": "C:\\Users\\Michał\\AppData\\Local",
    "USERPROFILE": "C:\\Users\\Michał",
}


def _no_path(_program: str) -> None:
    return None


def _only(*files: PurePath | str):  # noqa: ANN202
    wanted = {str(f) for f in files}
    return lambda path: str(path) in wanted


def test_windows_blender_is_found_in_program_files_newest_version_first():
    def glob(folder: PurePath, pattern: str) -> list[PurePath]:
        assert pattern == "Blender*"
        if folder == PureWindowsPath("C:/Program Files/Blender Foundation"):
            return [folder / "Blender 3.6", folder / "Blender 4.10", folder / "Blender 4.2"]
        return []

    places = standard_places("blender", "win32", WINDOWS_ENV, glob)
    assert places[:3] == [
        PureWindowsPath("C:/Program Files/Blender Foundation/Blender 4.10/blender.exe"),
        PureWindowsPath("C:/Program Files/Blender Foundation/Blender 4.2/blender.exe"),
        PureWindowsPath("C:/Program Files/Blender Foundation/Blender 3.6/blender.exe"),
    ]
    installed = PureWindowsPath("C:/Program Files/Blender Foundation/Blender 4.2/blender.exe")
    found = find_program(
        "blender",
        platform="win32",
        env=WINDOWS_ENV,
        which=_no_path,
        is_program=_only(installed),
        glob=glob,
    )
    assert found == str(installed)


def test_macos_blender_is_found_inside_blender_app_and_ffmpeg_in_homebrew():
    env = {"HOME": "/Users/ana"}
    app = "/Applications/Blender.app/Contents/MacOS/Blender"
    assert (
        find_program("blender", platform="darwin", env=env, which=_no_path, is_program=_only(app))
        == app
    )
    user_app = "/Users/ana/Applications/Blender.app/Contents/MacOS/Blender"
    assert (
        find_program(
            "blender", platform="darwin", env=env, which=_no_path, is_program=_only(user_app)
        )
        == user_app
    )
    # The Finder's PATH has no Homebrew folder: Apple silicon first, then Intel.
    for brew in ("/opt/homebrew/bin/ffmpeg", "/usr/local/bin/ffmpeg"):
        found = find_program(
            "ffmpeg", platform="darwin", env=env, which=_no_path, is_program=_only(brew)
        )
        assert found == brew
    assert standard_places("povray", "darwin", env)[0] == PurePosixPath("/opt/homebrew/bin/povray")


def test_windows_ffmpeg_is_found_where_winget_chocolatey_and_scoop_put_it():
    places = [str(p) for p in standard_places("ffmpeg", "win32", WINDOWS_ENV, lambda f, p: [])]
    assert places[:3] == [
        "C:\\Users\\Michał\\AppData\\Local\\Microsoft\\WinGet\\Links\\ffmpeg.exe",
        "C:\\ProgramData\\chocolatey\\bin\\ffmpeg.exe",
        "C:\\Users\\Michał\\scoop\\shims\\ffmpeg.exe",
    ]


def test_the_path_wins_over_the_usual_places_and_a_setting_wins_over_both():
    everywhere = lambda path: True  # noqa: E731
    env = {"HOME": "/Users/ana"}
    which = lambda program: f"/somewhere/{program}"  # noqa: E731
    assert find_program(
        "ffmpeg", platform="darwin", env=env, which=which, is_program=everywhere
    ) == ("/somewhere/ffmpeg")
    env[env_var("ffmpeg")] = "/opt/ffmpeg-7/bin/ffmpeg"
    assert find_program(
        "ffmpeg", platform="darwin", env=env, which=which, is_program=everywhere
    ) == ("/opt/ffmpeg-7/bin/ffmpeg")
    # A setting that names no file is not silently passed over for another copy.
    nothing = lambda path: False  # noqa: E731
    assert (
        find_program("ffmpeg", platform="darwin", env=env, which=which, is_program=nothing) is None
    )


def test_a_program_setting_reaches_the_renderer_and_the_doctor(tmp_path):
    """Real: POV-Ray off the PATH, named by --povray, is probed, passed to the renderer's
    environment, and shown by `peerfarm doctor`; a wrong path is a warning naming it."""
    povray = shutil.which("povray")
    assert povray is not None
    hidden = tmp_path / "Program Files" / "POV-Ray" / "povray"
    hidden.parent.mkdir(parents=True)
    shutil.copy2(povray, hidden)  # a copy: settings are resolved paths (no symlink kept)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PEERFARM_POVRAY": ""}
    code = (
        "import json, os\n"
        "from peerfarm.programs import set_locations\n"
        f"set_locations({{'povray': {str(hidden)!r}}})\n"
        "from peerfarm.renderers.povray.plugin import povray_version\n"
        "from peerfarm.renderers.base import renderer_environment\n"
        "from pathlib import Path\n"
        "passed = renderer_environment(Path('.'))['PEERFARM_POVRAY']\n"
        "print(json.dumps([povray_version(), passed]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    version, passed = json.loads(done.stdout)
    assert version and version.startswith("3.7")
    assert passed == str(hidden)

    def doctor(*options: str) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "peerfarm", "doctor", "--no-config", "--offline", "--json",
             "--data-dir", str(tmp_path / "data"), *options],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return [f for f in json.loads(done.stdout) if f["check"] == "programs"]

    povray_finding = [f for f in doctor("--povray", str(hidden)) if "povray" in f["text"]]
    assert povray_finding[0]["status"] == "ok" and str(hidden) in povray_finding[0]["text"]
    wrong = tmp_path / "nowhere" / "povray"
    povray_finding = [f for f in doctor("--povray", str(wrong)) if "povray" in f["text"]]
    assert povray_finding[0]["status"] == "warn" and str(wrong) in povray_finding[0]["text"]


# -- the renderer's environment ---------------------------------------------------------


def test_renderers_write_utf8_to_their_pipes_whatever_the_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("PYTHONIOENCODING", "cp1252")
    env = renderer_environment(tmp_path)
    assert env["PYTHONUTF8"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    # A Python renderer that knows nothing of peerfarm prints a path outside cp1252.
    path = str(tmp_path / "Michał データ" / "frame_0001.png")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; print('FRAME 1', sys.argv[1])", path],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("utf-8") == f"FRAME 1 {path}\n"


@pytest.mark.parametrize("program", ["blender", "povray", "ffmpeg"])
def test_only_the_programs_locations_pass_to_renderers(tmp_path, monkeypatch, program):
    monkeypatch.setenv(env_var(program), "/opt/x")
    monkeypatch.setenv("PEERFARM_FARM_KEY_FILE", "/secret")
    env = renderer_environment(tmp_path)
    assert env[env_var(program)] == "/opt/x" and "PEERFARM_FARM_KEY_FILE" not in env


# -- the address a node announces --------------------------------------------------------


def _routes(table: dict[str, str]):  # noqa: ANN202
    return lambda host: table.get(host)


def test_a_node_listening_on_one_address_announces_that_one():
    assert advertised_host("10.0.0.7", ["farm.example"], route=_routes({}))[0] == "10.0.0.7"


def test_the_interface_that_reaches_the_bootstrap_server_wins_over_virtual_adapters():
    # A Windows workstation: the default route goes out through a VPN adapter, a Hyper-V
    # switch is there too; the bootstrap server is reached through the office LAN.
    routes = _routes({"10.20.0.5": "10.20.0.77", LAN_PROBE: "100.64.3.9"})
    resolve = {"farm.example": ["10.20.0.5"]}.get
    host, why = advertised_host("0.0.0.0", ["farm.example"], route=routes, resolve=resolve)
    assert host == "10.20.0.77" and "farm.example" in why


def test_without_a_bootstrap_server_the_lan_route_decides_and_loopback_comes_last():
    routes = _routes({LAN_PROBE: "192.168.1.20"})
    # The bootstrap server on this machine says nothing of the LAN: skipped.
    resolve = {"localhost": ["127.0.0.1", "::1"]}.get
    assert advertised_host("0.0.0.0", ["localhost"], route=routes, resolve=resolve)[0] == (
        "192.168.1.20"
    )
    # A macOS .local lookup answering 127.0.0.1 never decides; a link-local source neither.
    routes = _routes({LAN_PROBE: "169.254.10.1", "10.0.0.1": "127.0.0.1"})
    resolve = {"mac.local": ["10.0.0.1"]}.get
    host, why = advertised_host("::", ["mac.local"], route=routes, resolve=resolve)
    assert host == "127.0.0.1" and "this machine only" in why


def test_route_source_asks_the_routing_table_only():
    assert route_source("127.0.0.1") == "127.0.0.1"
    assert route_source("not an address") is None


def test_a_real_node_on_all_interfaces_announces_the_chosen_address_or_advertise(tmp_path):
    from peerfarm.runtime.node import Node, NodeConfig
    from peerfarm.security.farm_key import new_key

    async def address_of(**options: object) -> str:
        config = NodeConfig(
            listen=("0.0.0.0", 0),
            data_dir=tmp_path / "n",
            zeroconf=False,
            slots=0,
            farm_key=new_key(),
            **options,
        )
        node = Node(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            address = node.status()["address"]
            node.request_stop()
        return address

    expected, _ = advertised_host("0.0.0.0", ["127.0.0.1"])
    host, port = parse_address(
        trio.run(functools.partial(address_of, bootstraps=[("127.0.0.1", 9)]))
    )
    assert host == expected and port > 0
    assert not is_loopback(host) or route_source(LAN_PROBE) is None
    assert trio.run(functools.partial(address_of, advertise="render-7.lan:7100")) == (
        "render-7.lan:7100"
    )


# -- per-user folders --------------------------------------------------------------------


def test_windows_data_stays_on_the_machine_not_in_the_roaming_profile():
    env = {
        "LOCALAPPDATA": "C:\\Users\\Michał\\AppData\\Local",
        "APPDATA": "C:\\Users\\Michał\\AppData\\Roaming",
    }
    assert str(user_data_root("win32", env)) == "C:\\Users\\Michał\\AppData\\Local\\peerfarm"
    assert str(user_log_dir("win32", env)) == "C:\\Users\\Michał\\AppData\\Local\\peerfarm\\Logs"
    assert str(roaming_data_root("win32", env)) == "C:\\Users\\Michał\\AppData\\Roaming\\peerfarm"
    # No LOCALAPPDATA (a service account's bare environment): under the profile still.
    bare = {"USERPROFILE": "C:\\Users\\svc"}
    assert str(user_data_root("win32", bare)) == "C:\\Users\\svc\\AppData\\Local\\peerfarm"


def test_macos_and_linux_folders():
    home = PurePosixPath("/Users/ana")
    assert user_data_root("darwin", {}, home) == home / "Library/Application Support/peerfarm"
    assert user_log_dir("darwin", {}, home) == home / "Library/Logs/peerfarm"
    assert roaming_data_root("darwin", {}, home) is None
    home = PurePosixPath("/home/ana")
    assert user_data_root("linux", {}, home) == home / ".local/share/peerfarm"
    assert user_data_root("linux", {"XDG_DATA_HOME": "/data/ana"}, home) == PurePosixPath(
        "/data/ana/peerfarm"
    )
    assert user_log_dir("linux", {}, home) == home / ".local/state/peerfarm/log"


def test_an_old_roaming_data_folder_is_moved_out_whole(tmp_path):
    old, new = tmp_path / "Roaming" / "peerfarm" / "node", tmp_path / "Local" / "peerfarm" / "node"
    old.mkdir(parents=True)
    (old / "node.json").write_text('{"node_id": "abc"}')
    assert move_out_of_roaming(old, new) == new
    assert (new / "node.json").read_text() == '{"node_id": "abc"}' and not old.exists()
    # Both there (moved before, or made by hand): the local one is used, the old one kept.
    old.mkdir(parents=True)
    assert move_out_of_roaming(old, new) == new and old.exists()


def test_a_roaming_folder_that_cannot_move_stays_in_use(tmp_path, caplog):
    old = tmp_path / "Roaming" / "node"
    old.mkdir(parents=True)
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should go")
    new = blocked / "peerfarm" / "node"
    assert move_out_of_roaming(old, new) == old and old.exists()
    assert "could not be moved" in caplog.text


# -- files on Windows: held files, long paths, names ---------------------------------------


def test_a_rename_windows_refuses_while_a_viewer_holds_the_file_is_tried_again(tmp_path):
    source, target = tmp_path / "frame.png.tmp", tmp_path / "frame.png"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    refusals, waits = [2], []

    def rename(a, b):  # noqa: ANN001, ANN202 - the viewer lets go after two tries
        if refusals[0]:
            refusals[0] -= 1
            raise PermissionError(13, "The process cannot access the file")
        os.replace(a, b)

    replace_file(source, target, platform="win32", rename=rename, sleep=waits.append)
    assert target.read_bytes() == b"new" and len(waits) == 2
    # Held for good: the error stands after about 2 s of tries, and the frame is not lost.
    source.write_bytes(b"newer")

    def held(a, b):  # noqa: ANN001, ANN202
        raise PermissionError(13, "The process cannot access the file")

    waits.clear()
    with pytest.raises(PermissionError):
        replace_file(source, target, platform="win32", rename=held, sleep=waits.append)
    assert 1.5 < sum(waits) < 3 and source.read_bytes() == b"newer"
    # POSIX renames over open files: a PermissionError there is real, raised at once.
    waits.clear()
    with pytest.raises(PermissionError):
        replace_file(source, target, platform="linux", rename=held, sleep=waits.append)
    assert waits == []


def test_windows_paths_past_260_characters_get_the_long_path_prefix():
    deep = "C:\\Users\\Michał\\AppData\\Local\\peerfarm\\node\\work\\" + "x" * 250
    assert long_path(deep, "win32") == "\\\\?\\" + deep
    assert long_path("\\\\nas\\farm\\work\\job", "win32") == "\\\\?\\UNC\\nas\\farm\\work\\job"
    assert long_path("\\\\?\\C:\\already", "win32") == "\\\\?\\C:\\already"
    assert long_path("/home/ana/work/job", "linux") == "/home/ana/work/job"


@pytest.mark.parametrize(
    ("asked", "made"),
    [
        ("con", "con_"),
        ("AUX", "AUX_"),
        ("nul.final", "nul_.final"),
        ("com1", "com1_"),
        ("lpt9", "lpt9_"),
        ("shot 12. ", "shot_12"),
        ("take:2", "take_2"),
        ('a<b>c"d|e?f*g', "a_b_c_d_e_f_g"),
        ("...", "job"),
    ],
)
def test_job_names_windows_cannot_hold_are_mapped(asked, made):
    assert safe_name(asked) == made and is_safe_name(made)
    assert not is_safe_name(asked)


def test_a_tilde_in_a_path_setting_is_the_home_folder(tmp_path):
    """`--data-dir=~/farm` (no shell expands a ~ after =) and a config file's "~/..."."""
    config = tmp_path / "config.toml"
    config.write_text('[node]\nremote-outputs = "~/farm-outputs"\n')
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "peerfarm", "config", "show", "--json", "node",
         "--config", str(config), "--data-dir=~/farm"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)["settings"]
    assert settings["data-dir"]["value"] == str(tmp_path / "home" / "farm")
    assert settings["remote-outputs"]["value"] == str(tmp_path / "home" / "farm-outputs")


def _subprocess_calls(tree: ast.AST):  # noqa: ANN202
    starters = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "check_output")}
    starters |= {("subprocess", "call"), ("trio", "run_process"), ("trio", "open_process")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in starters:
                yield node


# Programs started only where there is no console window to flash: Linux's GNOME idle
# monitor (ui/idle.py) and macOS's ps (renderer_processes._ps_start_time); and the helper
# itself, which sets the flags.
NOT_ON_WINDOWS = {"ui/idle.py", "peerfarm/runtime/renderer_processes.py:_ps_start_time"}


def test_every_program_peerfarm_starts_goes_through_the_no_window_helper():
    root = Path(__file__).resolve().parent.parent
    missing = []
    for folder in ("peerfarm", "ui", "bootstrap_server"):
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative == "peerfarm/child_processes.py" or relative in NOT_ON_WINDOWS:
                continue
            tree = ast.parse(path.read_text("utf-8"))
            functions = {
                id(call): f.name
                for f in ast.walk(tree)
                if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                for call in ast.walk(f)
            }
            for call in _subprocess_calls(tree):
                where = f"{relative}:{functions.get(id(call), '')}"
                if where in NOT_ON_WINDOWS:
                    continue
                helpers = [
                    k.value.func.id
                    for k in call.keywords
                    if k.arg is None
                    and isinstance(k.value, ast.Call)
                    and isinstance(k.value.func, ast.Name)
                ]
                if not {"no_window_options", "renderer_options"} & set(helpers) and not any(
                    k.arg == "creationflags" or (k.arg is None and isinstance(k.value, ast.Name))
                    for k in call.keywords
                ):
                    missing.append(f"{where} line {call.lineno}")
    assert missing == [], "start these with **no_window_options() (child_processes.py)"


# -- Ctrl+C and a data folder outside the locale, with a real node -------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals")
def test_ctrl_c_lets_a_chunk_in_flight_finish_in_a_non_ascii_data_folder(tmp_path):
    """A real `peerfarm node` in a terminal's foreground process group, with a data folder
    and an output folder outside ASCII, in the C locale: Ctrl+C (SIGINT
    to the whole group) while its renderer works stops the node only after the chunk has
    finished; every frame is there, and the node exits 0."""
    from factories import demo_spec
    from farmtools import submit, wait_until

    data_dir = tmp_path / "Michał データ"
    output = tmp_path / "wyjście ü"
    # The C locale, and the node's own output in a Windows code page without "ł" or "デ".
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "cp1252"}
    log_file = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    node = subprocess.Popen(
        [sys.executable, "-m", "peerfarm", "node", "--no-config", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--slots", "1", "--no-zeroconf", "--name", "solo"],
        stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,  # its own group, as a shell's foreground job
    )  # fmt: skip
    try:
        assert node.stdout is not None
        line = node.stdout.readline().decode("utf-8", "replace").strip()
        assert " listening on " in line, (tmp_path / "node.log").read_text(errors="replace")
        address = line.rsplit(" ", 1)[1]
        frames = 3
        spec = demo_spec(output, frames=(1, frames), chunk=frames, size=(640, 480))
        job_id = submit(address, spec)
        frames_dir = data_dir / "frames" / job_id
        record = data_dir / "renderer-processes.json"
        wait_until("the renderer to start", record.exists, 60, 0.05)
        in_flight = len(list(frames_dir.glob("*.png")))
        os.killpg(node.pid, signal.SIGINT)  # Ctrl+C in the node's terminal
        assert node.wait(timeout=180) == 0
        assert in_flight < frames  # the chunk was in flight when Ctrl+C came
        rendered = sorted(p.name for p in frames_dir.glob("*.png"))
        assert rendered == [f"demo_{n:04d}.png" for n in range(1, frames + 1)]
        log = (tmp_path / "node.log").read_text("utf-8", errors="replace")
        assert "renderer exited" not in log and "did not run" not in log, log[-3000:]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        log_file.close()
        if node.stdout is not None:
            node.stdout.close()


# -- keeping awake while rendering; the log file --------------------------------------------


def test_what_holds_sleep_off_on_each_platform():
    found = lambda name: f"/usr/bin/{name}"  # noqa: E731
    assert holder_command("darwin", 42, found) == ["/usr/bin/caffeinate", "-i", "-w", "42"]
    linux = holder_command("linux", 42, found)
    assert linux is not None and linux[0] == "/usr/bin/systemd-inhibit"
    assert "--what=sleep:idle" in linux and linux[-4:] == [
        "/usr/bin/tail",
        "--pid=42",
        "-f",
        os.devnull,
    ]
    assert holder_command("linux", 42, lambda name: None) is None  # no systemd: nothing
    assert holder_command("win32", 42, found) is None  # a system call, no program


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="this machine's holder")
def test_one_holder_for_overlapping_renders_and_none_after(caplog):
    caplog.set_level(logging.INFO, "peerfarm.runtime.keep_awake")
    awake = KeepAwake()
    with awake.while_rendering():
        holder = awake.holder
        with awake.while_rendering():
            assert awake.holder is holder  # the second render shares it
        assert awake.holder is holder
    assert awake.holder is None and awake.rendering == 0
    if holder is not None:
        assert holder.poll() is not None  # ended with the last render, not left running
        if holder.returncode not in (0, -signal.SIGTERM):  # logind refused (no bus here)
            assert "cannot keep this machine awake" in caplog.text
            with awake.while_rendering():
                assert awake.holder is None  # not tried again at every chunk


def test_a_log_file_rotates_and_holds_any_text(tmp_path, capsys):
    path = tmp_path / "Logs" / "node.log"
    try:
        setup_logging("info", log_file=path)
        logging.getLogger("peerfarm.test").info("frames of Michał データ")
        (handler,) = [h for h in logging.getLogger().handlers if hasattr(h, "maxBytes")]
        assert (handler.maxBytes, handler.backupCount) == (LOG_FILE_BYTES, LOG_FILE_BACKUPS)
        assert "frames of Michał データ" in path.read_text("utf-8")
        # A log file that cannot be: said on standard error, logging goes on there.
        blocked = tmp_path / "file"
        blocked.write_text("")
        setup_logging("info", log_file=blocked / "node.log")
        assert "cannot log to" in capsys.readouterr().err
    finally:
        setup_logging("warning")


# -- POV-Ray where Landlock is missing ------------------------------------------------------

# Runs `peerfarm ARGS` as on a Linux kernel without Landlock (before 5.13: Ubuntu 20.04's
# 5.4, RHEL 8's 4.18): a seccomp filter makes Landlock's system calls (444-446, the same
# numbers on every architecture) fail with ENOSYS, as such a kernel does, for the node
# and everything it starts.
OLD_KERNEL = """\
import ctypes, runpy, sys

class Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]

class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Instruction))]

LOAD_NR, JEQ, RET = 0x20, 0x15, 0x06
ENOSYS, ALLOW = 0x00050000 | 38, 0x7FFF0000
code = (Instruction * 6)(
    Instruction(LOAD_NR, 0, 0, 0),
    Instruction(JEQ, 2, 0, 444), Instruction(JEQ, 1, 0, 445), Instruction(JEQ, 0, 1, 446),
    Instruction(RET, 0, 0, ENOSYS), Instruction(RET, 0, 0, ALLOW),
)
libc = ctypes.CDLL(None, use_errno=True)
program = Program(6, code)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(program), 0, 0):
    sys.exit(f"cannot install the seccomp filter: errno {ctypes.get_errno()}")
sys.argv = ["peerfarm", *sys.argv[1:]]
runpy.run_module("peerfarm", run_name="__main__")
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("povray") is None,
    reason="a Linux kernel's Landlock and a real POV-Ray",
)
def test_without_landlock_povray_is_not_offered_and_status_and_doctor_say_why(tmp_path):
    def old_kernel(*args: str) -> list[str]:
        return [sys.executable, "-c", OLD_KERNEL, *args]

    doctor = subprocess.run(
        [*old_kernel("doctor", "--no-config", "--offline", "--json"),
         "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    povray = [f for f in json.loads(doctor.stdout) if f["text"].startswith("povray")]
    assert povray[0]["status"] == "warn" and "Landlock" in povray[0]["text"], povray
    log_file = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    node = subprocess.Popen(
        [*old_kernel("node", "--no-config", "--listen", "127.0.0.1:0", "--slots", "1",
                     "--data-dir", str(tmp_path / "n"), "--no-zeroconf")],
        stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert node.stdout is not None
        line = node.stdout.readline().decode("utf-8", "replace").strip()
        assert " listening on " in line, (tmp_path / "node.log").read_text(errors="replace")
        address = line.rsplit(" ", 1)[1]
        shown = subprocess.run(
            [sys.executable, "-m", "peerfarm", "status", "--node", address],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        said = [ln for ln in shown.stdout.splitlines() if ln.startswith("povray is not offered")]
        assert said and "POV-Ray 3.7" in said[0] and "Landlock" in said[0], shown.stdout
        as_json = subprocess.run(
            [sys.executable, "-m", "peerfarm", "status", "--node", address, "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        st = json.loads(as_json.stdout)
        assert set(st["renderers_not_offered"]) == {"povray"}
    finally:
        node.terminate()
        node.wait(timeout=60)
        log_file.close()
        node.stdout.close()


@pytest.mark.skipif(shutil.which("povray") is None, reason="a real POV-Ray")
def test_povrays_own_file_restrictions_do_not_hold_so_it_needs_landlock(tmp_path):
    """Why POV-Ray is not offered without Landlock: with the povray.conf peerfarm writes
    ([File I/O Security] restricted, only the job folder read+write), POV-Ray 3.7 still
    writes a file outside it and reads /etc/passwd. Should a POV-Ray build ever enforce
    its own restrictions, this fails: POV-Ray could then be offered without Landlock."""
    from peerfarm.renderers.povray.sandbox import (
        povray_conf,
        povray_library_paths,
        write_settings_home,
    )

    work, home, outside = tmp_path / "job", tmp_path / "settings", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    povray = Path(shutil.which("povray") or "").resolve()
    library = povray_library_paths(povray)
    write_settings_home(home, povray_conf(work, library, home), "")
    escaped = outside / "written-by-the-scene.txt"
    (work / "scene.pov").write_text(
        f'#fopen Out "{escaped}" write\n#write (Out, "x")\n#fclose Out\n'
        '#fopen In "/etc/passwd" read\n#fclose In\n'
        "camera { location <0,0,-3> look_at 0 }\nsphere { 0, 1 pigment { rgb 1 } }\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(povray), "+Iscene.pov", f"+O{work / 'out.png'}", "+W16", "+H16", "-D", "-V"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert escaped.exists(), "POV-Ray now enforces its own restrictions: see docs/povray.md"


def test_the_app_shows_a_renderer_installed_here_but_not_offered():
    pytest.importorskip("PySide6")
    from ui.farm_summary import PeerRow
    from ui.farm_view import not_offered_text, renderers_text

    why = "POV-Ray 3.7.0.10 is installed, but this Linux kernel does not offer Landlock"
    row = PeerRow("n1", "ws-7", "10.0.0.7:7100", "up", True, [("builtin", "0.1.0")], 4, [],
                  0, None, True, not_offered={"povray": why})  # fmt: skip
    assert renderers_text(row) == "builtin 0.1.0 (povray not offered)"
    assert not_offered_text(row) == f"povray is not offered: {why}"


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names are always Unicode")
def test_an_output_folder_the_nodes_locale_cannot_name_is_an_error_not_a_crash(tmp_path):
    """A POSIX node in a locale that is not UTF-8 (coercion and UTF-8 mode off) given an
    output folder outside ASCII: the job says why, the node goes on, nothing is lost."""
    from factories import demo_spec
    from farmtools import job_of, status, submit, wait_until

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"
    log_file = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    node = subprocess.Popen(
        [sys.executable, "-m", "peerfarm", "node", "--no-config", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--slots", "1", "--no-zeroconf"],
        stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert node.stdout is not None
        line = node.stdout.readline().decode("utf-8", "replace").strip()
        address = line.rsplit(" ", 1)[1]
        spec = demo_spec(tmp_path / "wyjście", frames=(1, 2), chunk=1, size=(32, 24))
        job_id = submit(address, spec)
        job = wait_until(
            "the job rendered and its output error said",
            lambda: (
                (j := job_of(status(address), job_id)).get("state") == "done"
                and j.get("output_error")
                and j
            ),
            120,
        )
        assert "UTF-8 locale" in job["output_error"] and node.poll() is None
        rendered = sorted(p.name for p in (tmp_path / "data" / "frames" / job_id).glob("*.png"))
        assert rendered == ["demo_0001.png", "demo_0002.png"]  # kept: nothing lost
    finally:
        node.terminate()
        node.wait(timeout=60)
        log_file.close()
        if node.stdout is not None:
            node.stdout.close()


def test_a_write_that_fails_leaves_no_temp_file(tmp_path, monkeypatch):
    """On a full disk every retry of an output write left its half-written temp file
    behind (a 3 MB output folder held 240 of them), holding on to the space."""
    import errno
    import os

    from peerfarm import disk

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "frame_0001.png"
    with pytest.raises(OSError, match="No space left"):
        disk.write_atomically(target, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []
