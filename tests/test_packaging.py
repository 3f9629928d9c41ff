"""The frozen app (packaging/build_app.py, PyInstaller) works without a Python install:
its renderer process, the command line and the desktop app, each as the real binary.

Building takes over a minute and needs PyInstaller (`pip install -e '.[package]'`),
so it runs only with PEERFARM_PACKAGING=1. Only the Linux build is tested here.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from factories import demo_spec
from farmtools import farm_running, job_of, start_bootstrap, status, submit, wait_until
from PIL import Image

from peerfarm import __version__
from peerfarm.cli.demo import Farm
from peerfarm.security.farm_key import ENV_VAR
from ui.settings import SETTINGS_FILE, Settings, save

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("PEERFARM_PACKAGING") != "1",
        reason="builds the app with PyInstaller (a minute or more): set PEERFARM_PACKAGING=1",
    ),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="only the Linux app build is tested"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("PyInstaller") is None,
        reason="PyInstaller is not installed: pip install -e '.[package]'",
    ),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """Build the app once; return the frozen binary."""
    dist = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("work")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "packaging" / "build_app.py"),
            "--dist",
            str(dist),
            "--work",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    archive = dist / f"peerfarm-{__version__}-linux-{os.uname().machine.lower()}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert {"peerfarm/peerfarm", "peerfarm/peerfarm.desktop", "peerfarm/peerfarm.png"} <= set(names)
    binary = dist / "peerfarm" / "peerfarm"
    assert os.access(binary, os.X_OK)
    return binary


def frozen_env() -> dict[str, str]:
    """The environment of a double-clicked app: no Python paths, no display."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def desktop_command(desktop_file: Path) -> list[str]:
    """The command a Linux launcher runs for the .desktop file (GLib and KDE split the
    Exec line as a shell would and put the file's own path in for %k)."""
    lines = desktop_file.read_text("utf-8").splitlines()
    exec_line = next(line.removeprefix("Exec=") for line in lines if line.startswith("Exec="))
    return [str(desktop_file) if arg == "%k" else arg for arg in shlex.split(exec_line)]


def test_frozen_renderer_process_renders_a_frame(app, tmp_path):
    # What the worker runs: `sys.executable -m peerfarm.renderers.builtin ...`
    done = subprocess.run(
        [
            str(app),
            "-m",
            "peerfarm.renderers.builtin",
            "--scene-file",
            "builtin:demo",
            "--frames",
            "3",
            "--size",
            "40x30",
            "--output-pattern",
            str(tmp_path / "f_{frame}.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=frozen_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["START 3", f"FRAME 3 {tmp_path / 'f_3.png'}"]
    with Image.open(tmp_path / "f_3.png") as image:
        assert image.size == (40, 30)
        assert image.getextrema() != ((0, 0), (0, 0), (0, 0))  # something was drawn


def test_frozen_renderer_reports_bad_arguments(app, tmp_path):
    done = subprocess.run(
        [
            str(app),
            "-m",
            "peerfarm.renderers.builtin",
            "--scene-file",
            "builtin:nope",
            "--frames",
            "1",
            "--size",
            "40x30",
            "--output-pattern",
            str(tmp_path / "f.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=frozen_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "peerfarm-builtin: error:" in done.stderr and "Traceback" not in done.stderr


def test_frozen_cli_runs_the_demo_farm(app, tmp_path):
    # `peerfarm demo` starts nodes as `sys.executable -m peerfarm ...`, they start renderers.
    out = tmp_path / "out"
    done = subprocess.run(
        [
            str(app),
            "demo",
            "--nodes",
            "2",
            "--frames",
            "2",
            "--chunk",
            "1",
            "--size",
            "32x24",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=frozen_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["demo_0001.png", "demo_0002.png"]


def test_frozen_desktop_app_renders_for_the_farm(app, tmp_path):
    """Started as a double-click on peerfarm.desktop starts it (no arguments, another
    working folder), the frozen desktop app runs its node with the user's saved
    settings, joins the farm and renders a job; the bootstrap server has no render
    slots, so every frame comes from the app's renderers."""
    farm = Farm(tmp_path)
    with farm_running(farm, tmp_path):
        _, bootstrap = start_bootstrap(farm, tmp_path)
        home = tmp_path / "home"
        settings = Settings(
            name="frozen",
            listen="127.0.0.1:0",
            bootstraps=(bootstrap,),
            slots=1,
            lan_discovery=False,
            farm_key_file=os.environ[ENV_VAR],
            setup_done=True,  # as after the first-start guide
        )
        # Where the app keeps its settings on Linux (QStandardPaths' AppConfigLocation).
        save(home / ".config" / "peerfarm" / SETTINGS_FILE, settings)
        env = frozen_env()
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
        env.update(XDG_DATA_HOME=str(home / ".local" / "share"))
        log_path = tmp_path / "gui.log"
        with open(log_path, "wb") as log:
            gui = subprocess.Popen(
                desktop_command(app.parent / "peerfarm.desktop"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=home,
            )
        farm.procs.append(gui)  # farm.stop() ends it with the rest
        try:
            wait_until(
                "the app's node to listen",
                lambda: " listening on " in log_path.read_text(errors="replace"),
                60,
            )
            out = tmp_path / "out"
            job_id = submit(bootstrap, demo_spec(out, frames=(1, 3), chunk=1, size=(32, 24)))
            wait_until("the job", lambda: job_of(status(bootstrap), job_id).get("complete"), 180)
            assert len(list(out.glob("*.png"))) == 3
            assert gui.poll() is None, "the app quit"
            # The node's data went to the per-user data folder, as for an installed app.
            assert (home / ".local" / "share" / "peerfarm" / "node" / "node.json").is_file()
        except BaseException:
            print(log_path.read_text(errors="replace")[-3000:])
            raise
