"""The service definitions in packaging/: the systemd units pass `systemd-analyze verify`
(no warning either) and its offline security review, the sysusers file creates the
service user, and every service (systemd, launchd, Windows/NSSM) runs a `peerfarm`
command line the real parser takes, with the data folder the service provides."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
UNITS = sorted((PACKAGING / "systemd").glob("*.service"))
INSTALLED = "/opt/peerfarm/bin/peerfarm"  # where docs/admin-guide.md installs peerfarm
MAX_EXPOSURE = 3.0  # systemd-analyze security: 0 best, 10 worst; "OK" is below 4


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must have {name}: .ci/run installs systemd")
        pytest.skip(f"{name} is not installed here (the systemd package); CI runs this")
    return path


def peerfarm_executable() -> str:
    found = shutil.which("peerfarm", path=str(Path(sys.executable).parent))
    assert found, "the peerfarm command is not installed beside this Python"
    return found


@pytest.fixture
def units(tmp_path) -> list[Path]:
    """The units as installed, their ExecStart pointing at this machine's peerfarm
    (verify checks that the program exists)."""
    out = []
    for unit in UNITS:
        text = unit.read_text().replace(INSTALLED, peerfarm_executable())
        (tmp_path / unit.name).write_text(text)
        out.append(tmp_path / unit.name)
    return out


def test_units_exist():
    assert [u.name for u in UNITS] == ["peerfarm-bootstrap.service", "peerfarm-node.service"]
    for unit in UNITS:
        assert f"ExecStart={INSTALLED} " in unit.read_text()


def test_systemd_analyze_verify(units):
    analyze = _tool("systemd-analyze")
    done = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify exits 0 on unknown keys and bad values, but says so: nothing may be said.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr
    )


def test_systemd_analyze_verify_catches_mistakes(units):
    """The check above would notice a typo (so its silence means something)."""
    analyze = _tool("systemd-analyze")
    broken = units[0].with_name("broken.service")
    broken.write_text(units[0].read_text().replace("Restart=on-failure", "Restrat=on-failure"))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert "Restrat" in done.stdout + done.stderr


def test_units_are_hardened(units):
    analyze = _tool("systemd-analyze")
    for unit in units:
        text = unit.read_text()
        for setting in (
            "User=peerfarm",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "CapabilityBoundingSet=\n",
        ):
            assert setting in text, f"{unit.name} lacks {setting!r}"
        done = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if "--offline" in done.stderr and done.returncode != 0:
            pytest.skip("this systemd-analyze has no offline security review (systemd < 250)")
        match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
        assert match, done.stdout + done.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout
    node = (PACKAGING / "systemd" / "peerfarm-node.service").read_text()
    assert "Nice=10" in node  # a good neighbour on a shared desktop
    assert "landlock_restrict_self" in node  # POV-Ray's confinement still works


def test_sysusers_creates_the_service_user(tmp_path):
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(PACKAGING / "systemd" / "peerfarm.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^peerfarm:x:\d+:\d+:[^:]*:/var/lib/peerfarm:", passwd, re.MULTILINE)


def exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def show(args: list[str], env: dict[str, str]) -> dict:
    """`peerfarm config show --json` of a service's command line, as the service runs it."""
    command, *options = args
    assert command in ("node", "bootstrap"), args
    done = subprocess.run(
        [sys.executable, "-m", "peerfarm", "config", "show", "--json", command, *options],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["settings"]


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_run_a_command_the_parser_takes(unit):
    args = exec_start(unit)
    assert args[0] == INSTALLED
    state = re.search(r"^StateDirectory=(\S+)$", unit.read_text(), re.MULTILINE).group(1)
    settings = show(args[1:], {"STATE_DIRECTORY": f"/var/lib/{state}"})
    # systemd hands the node its StateDirectory: that is its data folder.
    assert settings["data-dir"]["value"] == f"/var/lib/{state}"


def test_launchd_plist():
    with open(PACKAGING / "macos" / "org.peerfarm.node.plist", "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "org.peerfarm.node"
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart after a failure
    assert plist["Nice"] == 10 and plist["ProcessType"] == "Background"
    program, *args = plist["ProgramArguments"]
    assert program == INSTALLED
    settings = show(args, plist["EnvironmentVariables"])
    assert settings["data-dir"]["source"].startswith("default (system service")


def test_windows_service_recipe():
    script = (PACKAGING / "windows" / "install-node-service.ps1").read_text()
    install = re.search(r"^nssm install \$service \$peerfarm (.+)$", script, re.MULTILINE)
    assert install, "the recipe installs the service"
    settings = show(install.group(1).split(), {"PEERFARM_SERVICE": "1"})
    assert settings["data-dir"]["source"].startswith("default (system service")
    for setting in ("AppExit Default Restart", "AppPriority BELOW_NORMAL_PRIORITY_CLASS"):
        assert f"nssm set $service {setting}" in script


def test_example_config_file_reads():
    example = PACKAGING / "config.example.toml"
    for command in ("node", "bootstrap"):
        settings = show([command, "--config", str(example)], {})
        assert settings["farm-key-file"]["value"] == "/etc/xdg/peerfarm/farm.key"
    assert show(["node", "--config", str(example)], {})["bootstrap"]["value"] == [
        "render-server.lab.example:7000"
    ]


def test_the_desktop_file_stays():
    desktop = (PACKAGING / "linux" / "peerfarm.desktop").read_text()
    assert "[Desktop Entry]" in desktop
