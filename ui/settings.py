"""The desktop app's settings: what it saves per user, and the node options they make.

Qt-free on purpose (tested with plain values); the app finds the per-user
config folder with QStandardPaths and hands the file path in.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from peerfarm.core.refused import Refused
from peerfarm.core.requirements import parse_tags
from peerfarm.programs import PROGRAMS
from peerfarm.runtime.addresses import format_address, is_loopback, parse_address
from peerfarm.runtime.node import NodeConfig
from peerfarm.security.farm_key import FarmKey, FarmKeyError, load_key, resolve_key

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
DEFAULT_LISTEN = "0.0.0.0:7100"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and says what to change."""


@dataclass(frozen=True)
class Settings:
    name: str = ""  # shown to the farm; "" = the host name
    listen: str = DEFAULT_LISTEN
    bootstraps: tuple[str, ...] = ()
    data_dir: str = ""  # "" = the app's per-user data folder
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)
    lan_discovery: bool = True  # find and be found by nodes on the LAN (zeroconf)
    # The farm key file; "" = $PEERFARM_FARM_KEY_FILE, else the file `peerfarm init`
    # writes, if any (as for `peerfarm node`). Without a key: this computer only.
    farm_key_file: str = ""
    output_folder: str = ""  # default output folder of submitted jobs; "" = ~/peerfarm-output
    render_only_when_away: bool = False
    away_minutes: int = 10
    keep_rendering_in_tray: bool = True  # closing the window leaves the node running
    advertise: str = ""  # the address peers dial; "" = chosen (runtime/addresses.py)
    # Where Blender, POV-Ray and ffmpeg are; "" = found (PATH, usual places: programs.py)
    blender: str = ""
    povray: str = ""
    ffmpeg: str = ""
    setup_done: bool = False  # the first-start guide ran
    # Tags this node advertises (as `peerfarm node --tag`): jobs that require a tag
    # render only on nodes that have it (docs/scheduling.md).
    tags: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise SettingsError naming the first setting that cannot be used."""
        try:
            parse_address(self.listen)
        except ValueError as exc:
            raise SettingsError(f"listen address: {exc}") from None
        for b in self.bootstraps:
            try:
                parse_address(b)
            except ValueError as exc:
                raise SettingsError(f"bootstrap server: {exc}") from None
        if self.advertise:
            try:
                parse_address(self.advertise)
            except ValueError as exc:
                raise SettingsError(f"address peers dial: {exc}") from None
        for program in PROGRAMS:
            path = getattr(self, program)
            if path and not Path(path).expanduser().is_file():
                raise SettingsError(
                    f"{program} program: there is no file {path}; choose the program "
                    "itself, or leave it empty to find it by itself"
                )
        if not 0 <= self.slots <= 1024:
            raise SettingsError(f"slots: {self.slots} is not between 0 and 1024")
        try:
            parse_tags(self.tags)
        except Refused as exc:
            raise SettingsError(f"tags: {exc}") from None
        if not 1 <= self.away_minutes <= 24 * 60:
            raise SettingsError("away minutes: give 1 to 1440 minutes")
        if self.farm_key_file:
            try:
                load_key(Path(self.farm_key_file))
            except FarmKeyError as exc:
                raise SettingsError(f"farm key file: {exc}") from None

    def farm_key(self) -> FarmKey | None:
        """The key the node uses (see farm_key_file). Raises SettingsError."""
        try:
            return resolve_key(Path(self.farm_key_file) if self.farm_key_file else None)
        except FarmKeyError as exc:
            raise SettingsError(f"farm key file: {exc}") from None


def load(path: Path) -> Settings:
    """Saved settings, or the defaults (a broken file is reported and set aside)."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        log.warning("cannot read the settings in %s (%s); using the defaults", path, exc)
        return Settings()
    if not isinstance(raw, dict):
        log.warning("the settings in %s are not a map; using the defaults", path)
        return Settings()
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    defaults = Settings()
    for key, value in raw.items():
        if key not in known:
            continue  # a setting of another version: ignored, not fatal
        default = getattr(defaults, key)
        if key in ("bootstraps", "tags") and isinstance(value, list):
            value = tuple(str(v) for v in value)
        if type(value) is not type(default):
            log.warning("setting %s in %s has the wrong type; using the default", key, path)
            continue
        values[key] = value
    return replace(defaults, **values)


def save(path: Path, settings: Settings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(settings)
    data["bootstraps"] = list(settings.bootstraps)
    data["tags"] = list(settings.tags)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)


def node_config(settings: Settings, default_data_dir: Path) -> NodeConfig:
    """The embedded node's configuration. Raises SettingsError."""
    settings.check()
    farm_key = settings.farm_key()
    host = parse_address(settings.listen)[0]
    if farm_key is None and not is_loopback(host):
        raise SettingsError(
            f"this computer has no farm key, so its node may only listen on 127.0.0.1, not "
            f"{host}: choose the farm key file you were given (Settings > Farm key file), "
            f"or create a farm (File > First-start guide)"
        )
    config = NodeConfig(
        listen=parse_address(settings.listen),
        data_dir=Path(settings.data_dir) if settings.data_dir else default_data_dir,
        bootstraps=[parse_address(b) for b in settings.bootstraps],
        slots=settings.slots,
        name=settings.name,
        advertise=format_address(*parse_address(settings.advertise)) if settings.advertise else "",
        zeroconf=settings.lan_discovery,
        farm_key=farm_key,
        tags=parse_tags(settings.tags),
    )
    return config


def program_locations(settings: Settings) -> dict[str, str | None]:
    """The program places the settings give (program -> path; None: find it), for
    peerfarm.programs.set_locations before the node starts."""
    return {program: getattr(settings, program) or None for program in PROGRAMS}


class SettingsStore:
    """Saved settings plus this run's command-line overrides (which are not saved).

    A setting changed in the app is saved and replaces its override.
    """

    def __init__(self, path: Path | None, overrides: dict[str, Any] | None = None) -> None:
        self.path = path
        self.saved = load(path) if path is not None else Settings()
        self.overrides = dict(overrides or {})

    @property
    def effective(self) -> Settings:
        return replace(self.saved, **self.overrides)

    def update(self, **changes: Any) -> None:
        self.saved = replace(self.saved, **changes)
        for key in changes:
            self.overrides.pop(key, None)
        if self.path is not None:
            try:
                save(self.path, self.saved)
            except OSError as exc:
                log.error("cannot save the settings to %s: %s", self.path, exc)
