"""The script peerfarm runs inside Blender (`blender ... --python scene_script.py -- JSON`).

Blender runs it after loading the .blend (the file's own scripts never run:
Blender is started with --disable-autoexec). The JSON after `--` says what to do:

- ``{"mode": "info"}``: print the scene's settings as one line
  ``PEERFARM-BLENDER-INFO {...}`` and let Blender quit (the submitting node
  reads frame range, size, engine and the settings it must refuse);
- ``{"mode": "render", "settings": {...}}``: check the scene again, apply the
  job's settings (output path, format, size, engine, samples) and return, so that
  Blender goes on with the arguments that follow (`-s A -e B -a`).

A scene that cannot be rendered prints ``peerfarm-blender: error: ...`` lines
and exits with EXIT_REFUSED. `scene_problems` holds the rules; it is plain
Python, so peerfarm imports this module too (`bpy` is imported only inside
Blender). The code must run on the Python that Blender bundles.
"""

from __future__ import annotations

import json
import sys
from typing import Any

INFO_PREFIX = "PEERFARM-BLENDER-INFO "
ERROR_PREFIX = "peerfarm-blender: error: "
EXIT_REFUSED = 3  # also Blender's --python-exit-code: an exception here stops Blender
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT", "BLENDER_WORKBENCH")


def scene_problems(info: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Why this scene cannot be rendered with these job settings (empty: it can).

    `info` is what `scene_info` reports; `settings` the job's parsed options
    (engine, samples, denoise).
    """
    problems = []
    engine = settings.get("engine") or info["engine"]
    if engine not in ENGINES:
        problems.append(
            f"the scene's render engine is {info['engine']}, which peerfarm does not render "
            f"(add-on engines are not loaded on render nodes): choose Cycles, EEVEE or Workbench "
            f"in Render Properties, or pass --renderer-option engine=CYCLES"
        )
    if not info["camera"]:
        problems.append(
            f"scene {info['scene']!r} has no active camera: add one, or pick it in "
            "Scene Properties > Camera"
        )
    if info["frame_step"] != 1:
        problems.append(
            f"the scene's Frame Step is {info['frame_step']}, but peerfarm renders every frame "
            "of the job's range: set Frame Step to 1 (Output Properties > Frame Range), and "
            "choose frames with --frames"
        )
    if info["multiview"]:
        problems.append(
            "Stereoscopy is on (Output Properties > Stereoscopy): peerfarm renders one image "
            "per frame; turn it off"
        )
    if settings.get("samples") and engine == "BLENDER_WORKBENCH":
        problems.append(
            "the samples option applies to Cycles and EEVEE, not to Workbench: "
            "leave out --renderer-option samples=N"
        )
    no_oidn = (
        f"Blender {info['blender']} here is built without OpenImageDenoise "
        "(as Debian's and Ubuntu's Blender packages are)"
    )
    if engine == "CYCLES" and info["denoising"] and settings.get("denoise") is not False:
        if not info["oidn"]:
            problems.append(
                f"the scene has Cycles denoising on, and {no_oidn}: turn denoising off in "
                "Render Properties > Sampling > Denoise, or submit with "
                "--renderer-option denoise=off"
            )
    if info["denoise_nodes"] and not info["oidn"]:
        problems.append(
            f"the compositor uses a Denoise node ({', '.join(info['denoise_nodes'])}), and "
            f"{no_oidn}, so it would pass the image through noisy: mute or remove the node"
        )
    if info["file_output_nodes"]:
        problems.append(
            f"the compositor has File Output nodes ({', '.join(info['file_output_nodes'])}): "
            "they write files of their own, anywhere, which the farm does not collect; "
            "mute or remove them (peerfarm collects the rendered image of each frame)"
        )
    return problems


def _nodes(tree: Any, seen: set[int] | None = None) -> list[Any]:
    """Unmuted nodes of a node tree and of the groups it uses."""
    seen = set() if seen is None else seen
    if tree is None or tree.as_pointer() in seen:  # a group may be used more than once
        return []
    seen.add(tree.as_pointer())
    found = []
    for node in tree.nodes:
        if getattr(node, "mute", False):
            continue
        found.append(node)
        group = getattr(node, "node_tree", None)
        if group is not None:
            found += _nodes(group, seen)
    return found


def scene_info(bpy: Any) -> dict[str, Any]:
    """The settings of the scene Blender renders (the file's active scene)."""
    scene = bpy.context.scene
    render = scene.render
    try:
        import _cycles

        oidn = bool(getattr(_cycles, "with_openimagedenoise", False))
    except ImportError:  # a Blender without Cycles
        oidn = False
    cycles = getattr(scene, "cycles", None)
    denoising = bool(cycles is not None and getattr(cycles, "use_denoising", False)) and any(
        layer.use and getattr(getattr(layer, "cycles", None), "use_denoising", True)
        for layer in scene.view_layers
    )
    nodes = _nodes(scene.node_tree) if scene.use_nodes and render.use_compositing else []
    return {
        "blender": bpy.app.version_string,
        "scene": scene.name,
        "engine": render.engine,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
        "frame_step": scene.frame_step,
        "width": render.resolution_x,
        "height": render.resolution_y,
        "percentage": render.resolution_percentage,
        "file_format": render.image_settings.file_format,
        "camera": scene.camera.name if scene.camera is not None else "",
        "multiview": bool(render.use_multiview),
        "denoising": denoising,
        "oidn": oidn,
        "denoise_nodes": [n.name for n in nodes if n.bl_idname == "CompositorNodeDenoise"],
        "file_output_nodes": [n.name for n in nodes if n.bl_idname == "CompositorNodeOutputFile"],
    }


def apply_settings(bpy: Any, settings: dict[str, Any]) -> None:
    """Make Blender's animation render write the job's frames, as the job asks."""
    scene = bpy.context.scene
    render = scene.render
    if settings.get("engine"):
        render.engine = settings["engine"]
    if settings.get("denoise") is False and hasattr(scene, "cycles"):
        scene.cycles.use_denoising = False
    if settings.get("samples"):
        if render.engine == "CYCLES":
            scene.cycles.samples = settings["samples"]
        else:
            scene.eevee.taa_render_samples = settings["samples"]
    if settings.get("width"):
        render.resolution_x = settings["width"]
        render.resolution_y = settings["height"]
        render.resolution_percentage = 100
    image = render.image_settings
    wanted = settings.get("file_format", "PNG")
    if image.file_format != wanted:
        mode, depth = image.color_mode, image.color_depth
        image.file_format = wanted
        # Keep the file's colour mode and depth where the new format offers them;
        # else Blender's default for that format stays.
        for attr, value in (("color_mode", mode), ("color_depth", depth)):
            try:
                setattr(image, attr, value)
            except (TypeError, ValueError):
                pass
    # Exactly this path, with #### the frame number: no extension added, every
    # frame written even if a file is there (a retried chunk), no placeholders.
    render.filepath = settings["filepath"]
    render.use_file_extension = False
    render.use_overwrite = True
    render.use_placeholder = False


def main() -> int:
    import bpy

    request = json.loads(sys.argv[sys.argv.index("--") + 1])
    info = scene_info(bpy)
    if request["mode"] == "info":
        print(INFO_PREFIX + json.dumps(info), flush=True)
        return 0
    settings = request["settings"]
    problems = scene_problems(info, settings)
    if problems:
        for problem in problems:
            print(ERROR_PREFIX + problem, file=sys.stderr, flush=True)
        return EXIT_REFUSED
    apply_settings(bpy, settings)
    render = bpy.context.scene.render
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100
    print(
        f"peerfarm-blender: scene {info['scene']!r}, engine {render.engine}, "
        f"{width}x{height}, {render.image_settings.file_format} "
        f"{render.image_settings.color_mode} "
        f"{render.image_settings.color_depth}-bit, frames to {render.filepath}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)  # inside Blender: quit now, before the render arguments run
