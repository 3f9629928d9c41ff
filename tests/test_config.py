"""The config file (peerfarm/ops/config.py): where settings come from, strongest first
(command line, --config / $PEERFARM_CONFIG alone, else the per-user file over the
system-wide one, defaults), read by the real `peerfarm` and `peerfarm bootstrap`
parsers through `peerfarm config show --json`."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest

from peerfarm.cli.main import main
from peerfarm.ops import config
from peerfarm.ops.config import ConfigError


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Per-user and system-wide config places and data folders of a throwaway user."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home-config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home-data"))
    monkeypatch.delenv("PEERFARM_CONFIG", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("PEERFARM_SERVICE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_file(root: Path) -> Path:
    return root / "home-config" / "peerfarm" / "config.toml"


def system_file(root: Path) -> Path:
    return root / "etc-xdg" / "peerfarm" / "config.toml"


def shown(capsys, *argv: str) -> dict:
    """`peerfarm config show --json ARGV`: setting -> (value, source)."""
    assert main(["config", "show", "--json", *argv]) == 0
    data = json.loads(capsys.readouterr().out)
    return {k: (v["value"], v["source"]) for k, v in data["settings"].items()}


def test_places_come_from_platformdirs(places):
    assert config.user_config_file() == user_file(places)
    assert config.system_config_file() == system_file(places)
    assert config.default_data_dir("node")[0] == places / "home-data" / "peerfarm" / "node"


def test_defaults_without_any_file(places, capsys):
    s = shown(capsys)
    assert s["data-dir"] == (str(places / "home-data" / "peerfarm" / "node"), "default (per user)")
    assert s["bootstrap"] == ([], "default")
    assert s["peer-timeout"] == (3.0, "default")
    assert s["metrics"] == (None, "default")
    assert s["no-zeroconf"] == (False, "default")


def test_system_file_user_file_and_flags(places, capsys):
    system = write(
        system_file(places),
        '[node]\nslots = 2\nname = "lab"\nbootstrap = ["sys:7000"]\npeer-timeout = 5\n',
    )
    user = write(user_file(places), '[node]\nslots = 3\nbootstrap = ["mine:7000"]\n')
    s = shown(capsys, "node", "--bootstrap", "flag:7000", "--bootstrap", "flag2:7000")
    assert s["name"] == ("lab", f"{system} [node]")
    assert s["peer-timeout"] == (5.0, f"{system} [node]")
    assert s["slots"] == (3, f"{user} [node]")  # the per-user file wins over the system one
    # Flags win, and replace a file's list rather than adding to it.
    assert s["bootstrap"] == (["flag:7000", "flag2:7000"], "command line")


def test_config_option_reads_that_file_alone(places, capsys):
    write(system_file(places), "[node]\nslots = 2\n")
    write(user_file(places), "[node]\nslots = 3\n")
    other = write(places / "elsewhere" / "farm.toml", '[node]\nname = "other"\n')
    s = shown(capsys, "node", "--config", str(other))
    assert s["name"] == ("other", f"{other} [node]")
    assert s["slots"][1] == "default"  # neither the user's nor the system's file was read


def test_environment_variable_names_the_file(places, capsys, monkeypatch):
    write(user_file(places), '[node]\nname = "user"\n')
    env_file = write(places / "env.toml", '[node]\nname = "env"\n')
    monkeypatch.setenv("PEERFARM_CONFIG", str(env_file))
    assert shown(capsys)["name"] == ("env", f"{env_file} [node]")
    flag_file = write(places / "flag.toml", '[node]\nname = "flag"\n')
    assert shown(capsys, "node", "--config", str(flag_file))["name"][0] == "flag"


def test_no_config_reads_nothing(places, capsys):
    write(user_file(places), '[node]\nname = "user"\n')
    assert shown(capsys, "node", "--no-config")["name"] == ("", "default")


def test_top_level_keys_apply_to_every_command_and_tables_win(places, capsys):
    key = places / "keys" / "farm.key"
    path = write(
        user_file(places),
        f'farm-key-file = "{key}"\nlog-level = "warning"\nno-zeroconf = true\n'
        '[bootstrap]\nlog-level = "debug"\n',
    )
    node = shown(capsys, "node")
    assert node["farm-key-file"] == (str(key), f"{path} (top level)")
    assert node["log-level"] == ("warning", f"{path} (top level)")
    assert node["no-zeroconf"] == (True, f"{path} (top level)")
    bootstrap = shown(capsys, "bootstrap")  # `peerfarm bootstrap`, its own face
    assert bootstrap["farm-key-file"] == (str(key), f"{path} (top level)")
    assert bootstrap["log-level"] == ("debug", f"{path} [bootstrap]")
    assert bootstrap["data-dir"][0] == str(places / "home-data" / "peerfarm" / "bootstrap")


def test_relative_paths_resolve_once_against_their_origin(places, capsys):
    path = write(places / "conf" / "config.toml", '[node]\ndata-dir = "node-data"\n')
    s = shown(capsys, "node", "--config", str(path))
    assert s["data-dir"][0] == str(places / "conf" / "node-data")  # beside the file
    s = shown(capsys, "node", "--config", str(path), "--data-dir", "peerfarm-node")
    assert s["data-dir"] == (str(places / "peerfarm-node"), "command line")  # the cwd
    s = shown(capsys, "node", "--no-config", "--data-dir", "~/x")
    assert s["data-dir"][0] == str(Path("~/x").expanduser().resolve())


def test_system_service_default_data_dirs(places, capsys, monkeypatch):
    monkeypatch.setenv("PEERFARM_SERVICE", "1")
    assert shown(capsys)["data-dir"][0] == "/var/lib/peerfarm/node"
    monkeypatch.setenv("STATE_DIRECTORY", str(places / "state" / "node"))  # systemd's
    value, source = shown(capsys)["data-dir"]
    assert value == str(places / "state" / "node") and "STATE_DIRECTORY" in source


def test_show_prints_toml_that_reads_back(places, capsys):
    write(user_file(places), '[node]\nbootstrap = ["b:7000"]\nlisten = "0.0.0.0:7101"\n')
    assert main(["config", "show", "node", "--slots", "5", "--metrics", "9100"]) == 0
    text = capsys.readouterr().out
    assert "# command line" in text and f"# {user_file(places)} [node]" in text
    data = tomllib.loads(text)["node"]
    assert data["slots"] == 5
    assert data["bootstrap"] == ["b:7000"]
    assert data["listen"] == "0.0.0.0:7101"
    assert data["metrics"] == "127.0.0.1:9100"  # a port alone: loopback


def test_a_required_option_may_come_from_the_file(places, capsys):
    """`peerfarm status` needs --node; its [status] table may give it (and the error
    then is about reaching that node, not about a missing option)."""
    write(user_file(places), '[status]\nnode = "127.0.0.1:1"\n')
    assert main(["status"]) == 1
    assert "cannot reach a peerfarm node at 127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[node]\nslot = 3\n", "[node] slot: `peerfarm node` has no option --slot"),
        ('[node]\nslots = "3"\n', "slots: give a whole number"),
        ("[node]\nno-zeroconf = 1\n", "no-zeroconf: give true or false"),
        ('[node]\nlisten = "nohost"\n', "listen: 'nohost' is not an address"),
        ('[node]\nlog-level = "loud"\n', "log-level: 'loud' is not one of debug, info"),
        ("[node\n", "is not valid TOML"),
    ],
)
def test_bad_files_are_one_clear_line(places, capsys, text, expected):
    path = write(places / "bad.toml", text)
    assert main(["node", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"peerfarm: error: {path}") and expected in err, err
    assert "Traceback" not in err


def test_a_missing_config_file_given_by_name(places, capsys):
    assert main(["node", "--config", "nope.toml"]) == 1
    assert f"config file {places / 'nope.toml'} does not exist" in capsys.readouterr().err


def test_any_option_is_a_setting_by_itself(tmp_path):
    """The mechanism reads the parser: an option added later needs nothing else."""
    parser = argparse.ArgumentParser(prog="peerfarm future")
    config.add_config_options(parser)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--mode", choices=["a", "b"], default="a")
    parser.add_argument("--where", type=Path, default=None)
    parser.add_argument("--must", required=True)
    path = write(
        tmp_path / "c.toml",
        '[future]\ncount = 3\nratio = 2\ntag = ["x", "y"]\nfast = true\nmode = "b"\n'
        'where = "sub/dir"\nmust = "given"\n',
    )
    effective = config.parse(parser, ["--config", str(path), "--tag", "z"], "future")
    args = effective.args
    assert (args.count, args.ratio, args.tag, args.fast, args.mode) == (3, 2.0, ["z"], True, "b")
    assert args.where == tmp_path / "sub" / "dir"
    assert args.must == "given"
    assert effective.settings["tag"].source == "command line"
    assert effective.settings["count"].source == f"{path} [future]"
    write(path, "[future]\nmode = 'c'\n")
    with pytest.raises(ConfigError, match="'c' is not one of a, b"):
        config.parse(parser, ["--config", str(path), "--must", "x"], "future")
