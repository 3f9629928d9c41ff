"""The config file: every option of a command is also a setting in a TOML file.

Where a setting comes from, strongest first:

1. the command line;
2. the config file: ``--config FILE`` (or ``$PEERFARM_CONFIG``) alone, else the
   per-user file over the system-wide one (their places come from platformdirs);
3. the default (for the data folder: one per user, or one per system service).

A file holds a table per command, named after it (``[node]``, ``[bootstrap]``,
``[status]``, ...), whose keys are that command's long options without the
dashes (``data-dir``, ``bootstrap``, ``no-zeroconf``); a key at the top level
applies to every command that has that option (``farm-key-file``, ``log-level``).
In one file a command's table wins over the top level; the per-user file wins
over the system-wide one.

Nothing here lists a command's options: they are read from the command's own
argparse parser, so an option added later is a setting by itself. A relative
path is resolved once, at start: against the file's folder when a file gives it,
against the current folder when the command line does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from peerfarm.ops.places import user_data_root
from peerfarm.runtime.addresses import format_address

APP = "peerfarm"
FILE_NAME = "config.toml"
ENV_VAR = "PEERFARM_CONFIG"  # a config file to read instead of the per-user and system ones
SERVICE_ENV_VAR = "PEERFARM_SERVICE"  # "1": run as a system service (its default data folder)
FROM_COMMAND_LINE = "command line"
DEFAULT = "default"

# Options about the config file itself, not settings.
_META_DESTS = frozenset({"help", "version", "config", "no_config", "show_config"})

ComputedDefault = Callable[[], tuple[Any, str]]  # () -> (value, where it comes from)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the fix."""


# -- where the files are -----------------------------------------------------------


def user_config_file() -> Path:
    """The per-user file (Linux: ~/.config/peerfarm/config.toml, beside the farm key)."""
    return platformdirs.user_config_path(APP, appauthor=False, roaming=True) / FILE_NAME


def system_config_file() -> Path:
    """The system-wide file (Linux: /etc/xdg/peerfarm/config.toml; macOS: /Library/
    Application Support/peerfarm; Windows: C:\\ProgramData\\peerfarm)."""
    return platformdirs.site_config_path(APP, appauthor=False) / FILE_NAME


def system_data_root() -> Path:
    """Where a system service keeps its data folders when systemd does not say."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return Path("/var/lib") / APP
    return platformdirs.site_data_path(APP, appauthor=False)


def default_data_dir(command: str) -> tuple[Path, str]:
    """The data folder of `peerfarm COMMAND` when neither a flag nor a file names one."""
    state = os.environ.get("STATE_DIRECTORY", "")
    if state:  # systemd's StateDirectory= (packaging/systemd)
        return Path(state.split(":")[0]), "default (system service: $STATE_DIRECTORY)"
    if os.environ.get(SERVICE_ENV_VAR) == "1":
        return system_data_root() / command, f"default (system service: ${SERVICE_ENV_VAR}=1)"
    return Path(user_data_root()) / command, "default (per user)"


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    found: bool
    data: dict[str, Any] = field(default_factory=dict)


def read_file(path: Path, required: bool) -> ConfigFile:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return ConfigFile(path, False)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return ConfigFile(path, True, data)


def config_files(explicit: Path | None = None, no_config: bool = False) -> list[ConfigFile]:
    """The files to read, weakest first (a file not found reads as empty)."""
    if no_config:
        return []
    if explicit is None and os.environ.get(ENV_VAR):
        explicit = Path(os.environ[ENV_VAR])
    if explicit is not None:
        return [read_file(explicit.expanduser().resolve(), required=True)]
    return [read_file(system_config_file(), False), read_file(user_config_file(), False)]


def add_config_options(parser: argparse.ArgumentParser, show: bool = True) -> None:
    group = parser.add_argument_group("config file (docs/admin-guide.md)")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"read settings from this TOML file only (default: ${ENV_VAR}, else "
        f"{user_config_file()} over {system_config_file()}); options given here win",
    )
    group.add_argument(
        "--no-config", action="store_true", help="read no config file: options and defaults only"
    )
    if show:
        group.add_argument(
            "--show-config",
            nargs="?",
            const="toml",
            choices=("toml", "json"),
            metavar="FORMAT",
            help="print the effective settings and where each came from (toml or json), then exit",
        )


# -- a command's options as settings ------------------------------------------------


def settings_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """key -> the option it sets: every long option of the parser but the meta ones."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in _META_DESTS or action.dest == argparse.SUPPRESS:
            continue
        long = [s for s in action.option_strings if s.startswith("--")]
        if long:
            out[long[0][2:]] = action
    return out


def _key(text: str) -> str:
    return text.replace("_", "-")


@dataclass
class Setting:
    key: str
    value: Any
    source: str


@dataclass
class Effective:
    """A command's parsed options, and where each came from."""

    command: str
    args: argparse.Namespace
    settings: dict[str, Setting]
    files: list[ConfigFile]
    notes: list[str] = field(default_factory=list)

    def show(self, fmt: str = "toml") -> str:
        if fmt == "json":
            return json.dumps(
                {
                    "command": self.command,
                    "files": [{"path": str(f.path), "found": f.found} for f in self.files],
                    "settings": {
                        k: {"value": _plain(s.value), "source": s.source}
                        for k, s in sorted(self.settings.items())
                    },
                    "notes": self.notes,
                },
                indent=2,
            )
        lines = [
            f"# `peerfarm {self.command}`: effective settings (command line > config file > "
            f"default)",
            "# config files: "
            + (
                ", ".join(f"{f.path}{'' if f.found else ' (not found)'}" for f in self.files)
                or "none read"
            ),
            f"[{self.command}]",
        ]
        rows = []
        for key, s in sorted(self.settings.items()):
            value = _plain(s.value)
            text = f"# {key} =" if value is None else f"{key} = {toml_value(value)}"
            rows.append((text, s.source))
        width = max((len(t) for t, _ in rows), default=0)
        lines += [f"{t:<{width}}  # {src}" for t, src in rows]
        lines += [f"# note: {n}" for n in self.notes]
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """A setting's value as TOML or JSON can hold it (addresses as HOST:PORT)."""
    if isinstance(value, Path):
        return str(value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and type(value[1]) is int
    ):
        return format_address(*value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(str(value), ensure_ascii=False)


def _convert_one(action: argparse.Action, raw: Any, where: str) -> Any:
    kind = action.type
    if isinstance(raw, dict | list) or not isinstance(raw, str | int | float | bool):
        raise ConfigError(f"{where}: give a single value, not {type(raw).__name__}")
    if kind is int or isinstance(action, argparse._CountAction):
        if type(raw) is not int:
            raise ConfigError(f"{where}: give a whole number, e.g. 4")
        value: Any = raw
    elif kind is float:
        if type(raw) not in (int, float):
            raise ConfigError(f"{where}: give a number, e.g. 2.5")
        value = float(raw)
    elif type(raw) is bool:
        raise ConfigError(f"{where}: give a value in quotes, not {str(raw).lower()}")
    elif kind is None:
        if not isinstance(raw, str):
            raise ConfigError(f'{where}: give a string in quotes, e.g. "{raw}"')
        value = raw
    else:
        try:
            value = kind(str(raw))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return value


def convert(action: argparse.Action, raw: Any, where: str) -> Any:
    """A file's value for an option, as argparse would have made it of the flag."""
    if action.nargs == 0 and not isinstance(action, argparse._CountAction):  # a switch
        if type(raw) is not bool:
            raise ConfigError(f"{where}: give true or false")
        return action.const if raw else _original_default(action)
    if (
        isinstance(action, argparse._AppendAction)
        or action.nargs in ("*", "+")
        or (isinstance(action.nargs, int) and action.nargs > 1)
    ):
        items = raw if isinstance(raw, list) else [raw]
        return [_convert_one(action, item, f"{where}[{i}]") for i, item in enumerate(items)]
    return _convert_one(action, raw, where)


def _original_default(action: argparse.Action) -> Any:
    return getattr(action, "_peerfarm_default", action.default)


def _resolve(action: argparse.Action, value: Any, base: Path | None) -> Any:
    """Absolute paths for the options whose type is Path (base: a file's folder)."""
    if action.type is not Path or value is None:
        return value
    if isinstance(value, list):
        return [_resolve(action, v, base) for v in value]
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path.resolve()


def file_values(
    files: Sequence[ConfigFile], command: str, options: dict[str, argparse.Action]
) -> tuple[dict[str, tuple[Any, str, Path]], list[str]]:
    """key -> (raw value, where it is, the file's folder); and notes on keys not used."""
    found: dict[str, tuple[Any, str, Path]] = {}
    notes = []
    for f in files:  # weakest first: later files win
        for key, raw in f.data.items():
            if isinstance(raw, dict):
                continue  # a command's table
            if _key(key) in options:
                found[_key(key)] = (raw, f"{f.path} (top level)", f.path.parent)
            else:
                notes.append(f"{f.path}: top-level {key} is not a setting of `peerfarm {command}`")
        table = f.data.get(command)
        if not isinstance(table, dict):
            continue
        for key, raw in table.items():
            if _key(key) not in options:
                known = ", ".join(sorted(options))
                raise ConfigError(
                    f"{f.path}: [{command}] {key}: `peerfarm {command}` has no option "
                    f"--{_key(key)}; its settings are: {known}"
                )
            found[_key(key)] = (raw, f"{f.path} [{command}]", f.path.parent)
    return found, notes


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The options given on the command line (dest -> value): parse again with no defaults."""
    saved = [(a, a.default, a.required) for a in parser._actions]
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
            if a.option_strings:
                a.required = False
        namespace, _ = parser.parse_known_args(list(argv))
    finally:
        for a, default, required in saved:
            a.default, a.required = default, required
    return vars(namespace)


def _early(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    early = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    early.add_argument("--config", type=Path)
    early.add_argument("--no-config", action="store_true")
    namespace, _ = early.parse_known_args(list(argv))
    return namespace


def parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    command: str,
    computed: dict[str, ComputedDefault] | None = None,
) -> Effective:
    """Parse a command's options over its config file settings (see the module's doc).

    ``computed``: defaults worked out at start for options whose default is None
    (dest -> function giving the value and where it comes from), e.g. the data folder.
    Raises ConfigError; bad options exit as argparse does.
    """
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        parser.parse_args(argv)  # prints the help and exits
    early = _early(parser, argv)
    files = config_files(early.config, early.no_config)
    options = settings_of(parser)
    found, notes = file_values(files, command, options)
    from_file: dict[str, str] = {}
    for key, (raw, source, base) in found.items():
        action = options[key]
        value = _resolve(action, convert(action, raw, f"{source}: {key}"), base)
        action._peerfarm_default = action.default  # type: ignore[attr-defined]
        action.default = value
        action.required = False  # a file may give what the command line must otherwise
        from_file[action.dest] = source
    args = parser.parse_args(argv)
    given = _given(parser, argv)
    settings = {}
    for key, action in options.items():
        dest = action.dest
        if dest in given:
            # A flag replaces a file's list rather than adding to it.
            value, source = _resolve(action, given[dest], None), FROM_COMMAND_LINE
        elif dest in from_file:
            value, source = getattr(args, dest), from_file[dest]
        else:
            value, source = _resolve(action, getattr(args, dest), None), DEFAULT
        if value is None and computed and dest in computed:
            value, source = computed[dest]()
            value = _resolve(action, value, None)
        setattr(args, dest, value)
        settings[key] = Setting(key, value, source)
    return Effective(command, args, settings, files, notes)
