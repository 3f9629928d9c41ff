"""Which renderer plugins exist: the built-in ones and those other packages
register under the ``peerfarm.renderers`` entry-point group."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points

from peerfarm.renderers.base import Renderer, RendererError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "peerfarm.renderers"


def renderer_plugins() -> dict[str, Renderer]:
    from peerfarm.renderers import null, paced
    from peerfarm.renderers.blender.plugin import BlenderRenderer
    from peerfarm.renderers.builtin.plugin import BuiltinRenderer
    from peerfarm.renderers.povray.plugin import PovrayRenderer

    plugins: dict[str, Renderer] = {
        "builtin": BuiltinRenderer(),
        "povray": PovrayRenderer(),
        "blender": BlenderRenderer(),
    }
    if os.environ.get(null.ENV_VAR) == "1":  # `peerfarm bench dispatch` only
        plugins["null"] = null.NullRenderer()
    try:
        pace = paced.pace_from_env()  # `peerfarm bench mixed` only
    except RendererError as exc:
        log.warning("the paced renderer is off: %s", exc)
        pace = None
    if pace is not None:
        plugins["paced"] = paced.PacedRenderer(*pace)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()()
        except Exception as exc:  # a broken third-party plugin must not stop the node
            log.warning("renderer plugin %s could not be loaded: %s", ep.name, exc)
            continue
        if not isinstance(plugin, Renderer) or not plugin.name:
            log.warning("renderer plugin %s is not a peerfarm Renderer; ignored", ep.name)
            continue
        plugins.setdefault(plugin.name, plugin)
    return plugins


def renderers_not_offered(plugins: dict[str, Renderer], found: dict[str, str]) -> dict[str, str]:
    """name -> why, for the renderers installed here but not offered (blocking)."""
    reasons = {}
    for name, plugin in sorted(plugins.items()):
        if name in found:
            continue
        try:
            reason = plugin.not_offered()
        except Exception as exc:
            log.warning("asking renderer %s why it is not offered failed: %s", name, exc)
            continue
        if reason:
            reasons[name] = reason
    return reasons


def probe_renderers(plugins: dict[str, Renderer]) -> dict[str, str]:
    """name -> version of the renderers that can run on this machine (blocking).

    The plugins are asked at once, each in a thread: a probe mostly waits for a
    program (`blender --version` takes a second or more), and a node does not listen
    before it knows what it offers."""

    def probe(name: str) -> str | None:
        try:
            return plugins[name].probe()
        except Exception as exc:
            log.warning("probing renderer %s failed: %s", name, exc)
            return None

    names = sorted(plugins)
    if len(names) <= 1:
        versions = [probe(name) for name in names]
    else:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            versions = list(pool.map(probe, names))
    return {name: version[:64] for name, version in zip(names, versions, strict=True) if version}
