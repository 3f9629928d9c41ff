"""`peerfarm doctor` on real faults: a renderer missing from the PATH, a port in use (by
another program, and by a peerfarm node), farm keys that cannot be read, bootstrap
servers that answer or not, and a Qt platform plugin whose system library is missing
(a plugin built here, found through $QT_QPA_PLATFORM_PLUGIN_PATH as Qt finds it); the
same check makes `peerfarm gui` name the packages to install instead of Qt's message."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from farmtools import farm_running

from peerfarm.cli.demo import Farm
from peerfarm.cli.main import main
from peerfarm.ops import doctor, qt_platform
from peerfarm.security.farm_key import ENV_VAR, new_key, write_key

ROOT = Path(__file__).resolve().parent.parent


def run_doctor(capsys, tmp_path, *extra: str) -> tuple[int, list[dict]]:
    code = main(
        [
            "doctor",
            "--json",
            "--no-config",
            "--offline",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def of(findings: list[dict], check: str) -> list[dict]:
    return [f for f in findings if f["check"] == check]


def test_a_healthy_setup(capsys, tmp_path):
    code, findings = run_doctor(capsys, tmp_path)
    assert {"renderers", "farm key", "ports", "clock", "data dir", "disk"} <= {
        f["check"] for f in findings
    }
    builtin = [f for f in of(findings, "renderers") if f["text"].startswith("builtin ")]
    assert builtin and builtin[0]["status"] == "ok"
    assert of(findings, "farm key")[0]["status"] == "ok"  # the session's key ($ENV_VAR)
    assert of(findings, "data dir")[0]["status"] == "ok"
    assert code == (1 if any(f["status"] == "fail" for f in findings) else 0)


def test_a_renderer_missing_from_the_path(capsys, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _, findings = run_doctor(capsys, tmp_path)
    renderers = {f["text"].split()[0].rstrip(":"): f for f in of(findings, "renderers")}
    assert renderers["builtin"]["status"] == "ok"  # ships with peerfarm
    povray = renderers["povray"]
    assert povray["status"] == "warn" and "not offered" in povray["text"]
    assert "sudo apt install povray" in povray["fix"] and "dnf install povray" in povray["fix"]
    assert renderers["blender"]["status"] == "warn" and "blender" in renderers["blender"]["fix"]


def test_a_port_in_use_by_another_program(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, findings = run_doctor(capsys, tmp_path, "--listen", f"127.0.0.1:{port}")
    node = of(findings, "ports")[0]
    assert (
        node["status"] == "fail"
        and f"127.0.0.1:{port} is in use by another program" in (node["text"])
    )
    assert "--listen" in node["fix"]
    assert code == 1


def test_a_port_held_by_a_peerfarm_node_and_bootstrap_servers(capsys, tmp_path):
    farm = Farm(tmp_path / "farm")
    with farm_running(farm, tmp_path / "farm"):
        _, bootstrap = farm.start_bootstrap(tmp_path / "b")
        _, node = farm.start_node("busy-node", bootstrap, tmp_path / "n", 1)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            nobody = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        code = main(
            [
                "doctor",
                "--json",
                "--no-config",
                "--no-zeroconf",
                "--data-dir",
                str(tmp_path / "data"),
                "--listen",
                node,
                "--bootstrap",
                bootstrap,
                "--bootstrap",
                nobody,
                "--bootstrap",
                node,
            ]
        )
        findings = json.loads(capsys.readouterr().out)
    port = of(findings, "ports")[0]
    assert port["status"] == "warn" and "in use by the peerfarm node busy-node" in port["text"]
    reached, unreachable, not_bootstrap = of(findings, "bootstrap")
    assert reached["status"] == "ok" and "bootstrap server bootstrap answers" in reached["text"]
    assert unreachable["status"] == "fail" and "cannot reach" in unreachable["text"]
    assert "firewall" in unreachable["fix"]
    assert not_bootstrap["status"] == "warn" and "not a bootstrap server" in not_bootstrap["text"]
    assert of(findings, "LAN discovery")[0]["status"] == "skip"
    assert code == 1


def test_farm_keys_that_cannot_be_read(capsys, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, findings = run_doctor(capsys, tmp_path, "--farm-key-file", str(folder))
    key = of(findings, "farm key")[0]
    assert key["status"] == "fail" and f"cannot read farm key file {folder}" in key["text"]
    assert code == 1

    garbled = tmp_path / "garbled.key"
    garbled.write_text("not a key\n")
    _, findings = run_doctor(capsys, tmp_path, "--farm-key-file", str(garbled))
    key = of(findings, "farm key")[0]
    assert key["status"] == "fail" and "is not a peerfarm farm key file" in key["text"]

    missing = tmp_path / "missing.key"
    _, findings = run_doctor(capsys, tmp_path, "--farm-key-file", str(missing))
    assert "does not exist" in of(findings, "farm key")[0]["text"]

    shared = tmp_path / "shared.key"
    write_key(new_key(), shared)
    shared.chmod(0o644)
    _, findings = run_doctor(capsys, tmp_path, "--farm-key-file", str(shared))
    ok, readable = of(findings, "farm key")
    assert ok["status"] == "ok" and readable["status"] == "warn"
    assert f"chmod 600 {shared}" in readable["fix"]


def _python_for(uid: int) -> tuple[str, str]:
    """A Python that user ``uid`` may run with this peerfarm: this one, or (when it lives
    in root's home) the system's of the same version, given this one's packages."""
    import sysconfig

    path = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version) or "", f"/usr/bin/{version}"):
        if not python:
            continue
        try:
            subprocess.run(
                [python, "-c", "import peerfarm.cli"],
                user=uid,
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONPATH": path},
                cwd="/",
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return python, path
    pytest.skip(f"no Python here that user {uid} may run with this peerfarm")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to switch user")
def test_a_key_the_service_user_may_not_read(tmp_path):
    """As root, run the doctor as another user (`nobody`) on a key only root may read:
    the very failure a service user meets with a key copied as root."""
    python, path = _python_for(65534)
    tmp_path.chmod(0o755)
    key = tmp_path / "farm.key"
    write_key(new_key(), key)  # 0600, owned by root
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    env = {**os.environ, "HOME": str(data), ENV_VAR: "", "PYTHONPATH": path}
    done = subprocess.run(
        [python, "-m", "peerfarm", "doctor", "--json", "--no-config", "--offline"]
        + ["--data-dir", str(data), "--listen", "127.0.0.1:0", "--farm-key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        user=65534,
        group=65534,
        cwd=str(data),
    )
    assert done.stdout, done.stderr
    findings = json.loads(done.stdout)
    found = of(findings, "farm key")[0]
    assert found["status"] == "fail" and "Permission denied" in found["text"], done.stderr
    assert "chmod 640" in found["fix"]
    assert done.returncode == 1


# -- the desktop app's Qt platform plugin ---------------------------------------------


def _compile(source: str, output: Path, *flags: str) -> None:
    c_file = output.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(output), str(c_file), *flags], check=True)


def _absent_library() -> str:
    """A library of the table (so with known packages) that this machine lacks."""
    for name in qt_platform.PACKAGES:
        found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        if f"{name} " not in found:
            return name
    pytest.skip("every library of the table is installed here")


@pytest.fixture
def fake_plugins(tmp_path):
    """A platforms folder whose libqxcb.so needs a library found only through
    LD_LIBRARY_PATH (a stub built here): (plugins folder, stub folder, library)."""
    if shutil.which("cc") is None or shutil.which("ldd") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI must have a C compiler and ldd: .ci/run installs gcc")
        pytest.skip("needs a C compiler and ldd")
    library = _absent_library()
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _compile("int stub(void) { return 0; }", stubs / library, f"-Wl,-soname,{library}")
    plugins = tmp_path / "platforms"
    plugins.mkdir()
    _compile(
        "int plugin(void) { return 0; }",
        plugins / "libqxcb.so",
        "-Wl,--no-as-needed",
        f"-L{stubs}",
        f"-l:{library}",
    )
    return plugins, stubs, library


def qt_env(plugins: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "LD_LIBRARY"))}
    env.pop("WAYLAND_DISPLAY", None)
    return {**env, "QT_QPA_PLATFORM_PLUGIN_PATH": str(plugins), "DISPLAY": ":99", **extra}


def test_a_missing_qt_library_names_its_packages(fake_plugins):
    plugins, stubs, library = fake_plugins
    debian, fedora = qt_platform.PACKAGES[library]
    result = qt_platform.check_platform_plugin(qt_env(plugins))
    assert not result.ok and result.platform == "xcb"
    assert result.missing == [library]
    assert f"sudo apt install {debian}" in result.problem
    assert f"sudo dnf install {fedora}" in result.problem
    # The same plugin with the library on LD_LIBRARY_PATH: nothing is missing.
    assert qt_platform.check_platform_plugin(qt_env(plugins, LD_LIBRARY_PATH=str(stubs))).ok


def test_doctor_reports_the_missing_qt_library(fake_plugins):
    plugins, _, library = fake_plugins
    findings = doctor.check_desktop_app(qt_env(plugins))
    assert findings[0].status == "fail" and library in findings[0].text
    assert qt_platform.PACKAGES[library][0] in findings[0].fix
    # Without a display the app is not used here: a warning, not a failure.
    headless = {k: v for k, v in qt_env(plugins).items() if k != "DISPLAY"}
    assert doctor.check_desktop_app(headless)[0].status == "warn"


def test_gui_says_what_to_install_instead_of_qts_message(fake_plugins):
    plugins, _, library = fake_plugins
    done = subprocess.run(
        [sys.executable, "-m", "peerfarm", "gui", "--settings", str(plugins / "s.json")],
        capture_output=True,
        text=True,
        timeout=60,
        env=qt_env(plugins),
    )
    assert done.returncode == 1
    debian, fedora = qt_platform.PACKAGES[library]
    assert "the desktop app cannot open a window" in done.stderr
    assert f"sudo apt install {debian}" in done.stderr and fedora in done.stderr
    assert "could not load the Qt platform plugin" not in done.stderr


def test_an_unknown_library_gets_a_search_hint():
    hint = qt_platform.install_hint(["libpeerfarm-nothing.so.7"])
    assert "apt-file search libpeerfarm-nothing.so.7" in hint and "dnf provides" in hint


def test_the_wheel_plugin_is_found_without_importing_qt():
    if qt_platform.platforms_dir({}) is None:
        pytest.skip("PySide6 is not installed")
    directory = qt_platform.platforms_dir({})
    assert (directory / "libqoffscreen.so").exists() or sys.platform != "linux"
    assert qt_platform.check_platform_plugin({"QT_QPA_PLATFORM": "offscreen"}).ok
