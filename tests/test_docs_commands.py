"""The commands in the operations docs cannot rot.

- Every `peerfarm ...` line of a ```sh block in README.md, docs/quick-start.md,
  docs/admin-guide.md and docs/faq.md is parsed by the real argument parser of
  its command (the CLI's, the bootstrap server's, the app's).
- Blocks marked ``<!-- run: MACHINE... [background] -->`` are run, in document
  order, on three simulated machines (lab-1, lab-2, lab-3: each its own home,
  per-user folders and config file) by bash, as a user would type them. The
  test's only help: each machine's per-user config file puts its node and
  bootstrap server on their own loopback ports with LAN discovery off (so the
  throwaway farm stays off the real LAN), addresses in the docs (``lab-1:7000``,
  ``127.0.0.1:7100``) are mapped to those ports, and ``<!-- copy-key: FROM TO... -->``
  copies the farm key file as the block's scp lines would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/quick-start.md", "docs/admin-guide.md", "docs/faq.md"]
RUN_DOCS = ["docs/quick-start.md", "docs/admin-guide.md", "docs/faq.md"]
BLOCK = re.compile(r"(?:<!--\s*(?P<marker>[^>]*?)\s*-->\n)?```sh\n(?P<body>.*?)```", re.DOTALL)
ADDRESS = re.compile(r"\b(lab-\d|127\.0\.0\.1):(7000|7100)\b")
START_TIMEOUT = 30
RUN_TIMEOUT = 300


@dataclass
class Block:
    doc: str
    marker: str
    lines: list[str]


def blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text()
    return [
        Block(doc, m.group("marker") or "", [x for x in m.group("body").splitlines() if x.strip()])
        for m in BLOCK.finditer(text)
    ]


# -- every peerfarm line parses ---------------------------------------------------------


def peerfarm_commands(line: str) -> list[list[str]]:
    """The argument lists of the `peerfarm` commands on a shell line (after sudo -u X,
    before pipes and &&), without the program name."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    commands, current = [], []
    for word in [*words, "&&"]:
        if word in ("&&", "||", "|", ";", "&", ">", ">>", "<"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    found = []
    for command in commands:
        while command and re.fullmatch(r"[A-Z_]+=.*", command[0]):
            command = command[1:]  # VAR=value
        if command[:1] == ["sudo"]:
            command = command[1:]
            while command and command[0].startswith("-"):
                command = command[2:] if command[0] in ("-u", "-g") else command[1:]
        if command and re.search(r"(^|/)peerfarm(\.exe)?$", command[0]):
            found.append(command[1:])
    return found


def doc_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for doc in DOCS:
        for block in blocks(doc):
            for line in block.lines:
                for args in peerfarm_commands(line):
                    out.append((doc, line, args))
    return out


def parse(args: list[str]) -> None:
    """Parse a command line as `peerfarm` would (raises SystemExit on a bad one)."""
    from bootstrap_server.server import build_parser as bootstrap_parser
    from peerfarm.cli.main import build_parser, parse_command_line
    from ui.launch import build_parser as gui_parser

    if args[:1] == ["bootstrap"]:
        bootstrap_parser().parse_args(args[1:])
    elif args[:1] == ["gui"]:
        gui_parser().parse_args(args[1:])
    elif args[:2] == ["config", "show"]:
        shown, _ = parse_command_line(args)
        parse([shown.target, *shown.options])
    else:
        build_parser().parse_args(args)


COMMANDS = doc_commands()


def test_the_docs_hold_commands():
    docs = {doc for doc, _, _ in COMMANDS}
    assert docs == set(DOCS)
    assert sum(1 for doc, _, _ in COMMANDS if doc == "docs/admin-guide.md") >= 10


@pytest.mark.parametrize(
    ("doc", "line", "args"), COMMANDS, ids=[f"{d}: {x}" for d, x, _ in COMMANDS]
)
def test_every_peerfarm_line_parses(doc, line, args, capsys):
    try:
        parse(args)
    except SystemExit as exc:
        assert exc.code == 0, f"{doc}: `{line}` does not parse:\n{capsys.readouterr().err}"


def test_readme_opens_with_the_two_quick_start_commands():
    first = blocks("README.md")[:2]
    assert [b.lines for b in first] == [
        ["python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/peerfarm demo"],
        [
            "python3 -m venv .venv && .venv/bin/pip install '.[test]' && "
            ".venv/bin/python -m pytest -q"
        ],
    ]


# -- the marked blocks run ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Machine:
    name: str
    home: Path
    node_port: int
    env: dict[str, str] = field(default_factory=dict)


class Lab:
    """Three simulated machines; lab-1 also runs the bootstrap server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bootstrap_port = free_port()
        self.machines: dict[str, Machine] = {}
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.outputs: list[str] = []
        bin_dir = str(Path(sys.executable).parent)
        for i in (1, 2, 3):
            name = f"lab-{i}"
            home = root / name
            machine = Machine(name, home, free_port())
            config = home / ".config" / "peerfarm"
            config.mkdir(parents=True)
            (config / "config.toml").write_text(
                "# The test's only addition: this simulated machine's own loopback ports.\n"
                f'[node]\nlisten = "127.0.0.1:{machine.node_port}"\nno-zeroconf = true\n'
                f'name = "{name}"\n'
                f'[bootstrap]\nlisten = "127.0.0.1:{self.bootstrap_port}"\nno-zeroconf = true\n'
            )
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("PEERFARM_FARM_KEY_FILE", "PEERFARM_CONFIG", "DISPLAY")
            }
            env.update(
                HOME=str(home),
                XDG_CONFIG_HOME=str(home / ".config"),
                XDG_DATA_HOME=str(home / ".local" / "share"),
                XDG_CONFIG_DIRS=str(root / f"{name}-etc-xdg"),
                PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            )
            machine.env = env
            self.machines[name] = machine

    def address(self, on: Machine, host: str, port: str) -> str:
        machine = on if host == "127.0.0.1" else self.machines[host]
        if port == "7000":
            return f"127.0.0.1:{self.bootstrap_port}"
        return f"127.0.0.1:{machine.node_port}"

    def substitute(self, on: Machine, line: str) -> str:
        return ADDRESS.sub(lambda m: self.address(on, m.group(1), m.group(2)), line)

    def run_block(self, block: Block) -> None:
        kind, *words = block.marker.split()
        if kind == "copy-key:":
            source, *targets = words
            key = self.machines[source].home / ".config" / "peerfarm" / "farm.key"
            for target in targets:
                shutil.copy2(key, self.machines[target].home / ".config" / "peerfarm")
            return
        assert kind == "run:", block.marker
        background = "background" in words
        for name in [w for w in words if w != "background"]:
            on = self.machines[name]
            for line in block.lines:
                self.run_line(block.doc, on, self.substitute(on, line), background)

    def run_line(self, doc: str, on: Machine, line: str, background: bool) -> None:
        where = f"{doc} on {on.name}: {line}"
        if background:
            log = open(self.root / f"{on.name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=on.home,
                env=on.env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            self.procs.append((where, proc))
            first = proc.stdout.readline().decode(errors="replace")
            assert " listening on " in first, f"{where} did not start:\n{self.logs()}"
            return
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=on.home,
            env=on.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        self.outputs.append(f"$ {where}\n{done.stdout}{done.stderr}")
        doctor = any(args[:1] == ["doctor"] for args in peerfarm_commands(line))
        allowed = (0, 1) if doctor else (0,)  # doctor's 1 means "something to fix"
        assert done.returncode in allowed, f"{where} exited {done.returncode}:\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr}"

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("docs-lab"))
    try:
        yield lab
    except BaseException:
        print(lab.logs())
        raise
    finally:
        lab.stop()


def run_doc(lab: Lab, doc: str) -> None:
    try:
        for block in blocks(doc):
            if block.marker:
                lab.run_block(block)
    except BaseException:
        print("\n".join(lab.outputs[-5:]))
        print(lab.logs())
        raise


def test_quick_start_runs_as_written(lab):
    run_doc(lab, "docs/quick-start.md")
    frames = lab.machines["lab-3"].home / "frames"
    assert sorted(p.name for p in frames.glob("demo_*.png")) == [
        f"demo_{n:04d}.png" for n in range(1, 25)
    ]
    assert (frames / "demo.gif").exists()
    # The three nodes shared the work: each has frames in its per-user data folder.
    for machine in lab.machines.values():
        data = machine.home / ".local" / "share" / "peerfarm" / "node"
        assert (data / "node.json").exists(), machine.name
    assert (lab.machines["lab-1"].home / ".local/share/peerfarm/bootstrap/log.bin").exists()


def test_admin_guide_runs_as_written(lab):
    if not lab.procs:
        pytest.skip("needs the quick start's farm")
    run_doc(lab, "docs/admin-guide.md")
    shown = "\n".join(lab.outputs)
    assert "[node]" in shown and '"command": "bootstrap"' in shown
    assert "retention-budget = 53687091200" in shown  # 50G, from the command line
    assert "would free " in shown and "\nfreed " in shown  # peerfarm gc, dry and not
    assert (lab.machines["lab-1"].home / "peerfarm-bootstrap-backup.tar.gz").exists()


def test_faq_runs_as_written(lab):
    if not lab.procs:
        pytest.skip("needs the quick start's farm")
    run_doc(lab, "docs/faq.md")


def test_run_markers_name_known_machines():
    for doc in RUN_DOCS:
        for block in blocks(doc):
            if block.marker:
                kind, *words = block.marker.split()
                assert kind in ("run:", "copy-key:"), f"{doc}: {block.marker}"
                assert set(words) - {"background"} <= {"lab-1", "lab-2", "lab-3"}, block.marker
