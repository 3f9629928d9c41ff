"""The built-in renderer's scene format: JSON text in, a validated `Scene` out.

A scene is JSON with "format": "peerfarm-scene/1" (docs/builtin-renderer.md is
the user reference). Animation works the way POV-Ray's does: each frame gets a
`clock` value, and any number outside the "animation" block may be a string
expression of `clock`. Expressions are parsed with `ast` and run by a tiny
interpreter that knows only arithmetic and a fixed list of math functions, so
a scene from a peer can never run code, and size limits keep a hostile scene
from stalling a node.

Loading checks structure and types; value ranges (radius > 0, colours in 0..1)
are checked per frame by `resolve_frame`, since an expression may leave its
range only at some clock. Loading resolves the first and last frame too, so
most mistakes surface before a job starts.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

FORMAT = "peerfarm-scene/1"
MAX_SCENE_BYTES = 256 * 1024
MAX_OBJECTS = 256
MAX_LIGHTS = 8
MAX_MAX_DEPTH = 5  # POV-Ray's default max_trace_level
MAX_ANTIALIAS = 4
MAX_FRAME = 999_999
MAX_EXPRESSION_CHARS = 500
MAX_EXPRESSION_DEPTH = 50
# Larger exponents only overflow or round to 0/1; refusing them keeps `9**9**9` instant.
MAX_EXPONENT = 1024.0
MAX_SHININESS = 1000

_SCENE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class SceneError(ValueError):
    """A scene that cannot be loaded or rendered; the message starts with the field path."""


# --- clock expressions -------------------------------------------------------------------------


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _mix(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise OverflowError(f"exponent {exponent:g} is too large (limit {MAX_EXPONENT:g})")
    # math.pow raises on a negative base with a fractional exponent instead of going complex.
    return math.pow(base, exponent)


# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "atan2": (math.atan2, 2, 2),
    "sqrt": (math.sqrt, 1, 1),
    "abs": (math.fabs, 1, 1),
    "min": (min, 2, 8),
    "max": (max, 2, 8),
    "floor": (lambda x: float(math.floor(x)), 1, 1),
    "ceil": (lambda x: float(math.ceil(x)), 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 1),
    "clamp": (_clamp, 3, 3),
    "mix": (_mix, 3, 3),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_OPERATOR_TEXT = {
    ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.Not: "not", ast.Invert: "~",
}  # fmt: skip
_NODE_TEXT = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda",
    ast.Compare: "comparison", ast.BoolOp: "and/or", ast.IfExp: "if/else",
    ast.NamedExpr: "':='", ast.Starred: "'*' unpacking", ast.JoinedStr: "an f-string",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.ListComp: "a comprehension", ast.GeneratorExp: "a comprehension",
    ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}  # fmt: skip


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class Expr:
    """A number written as an expression of `clock`, checked when the scene loads."""

    text: str
    path: str
    tree: ast.expr = dataclasses.field(compare=False, repr=False)

    def value(self, clock: float) -> float:
        try:
            result = _evaluate(self.tree, clock)
        except (ArithmeticError, ValueError) as exc:
            # resolve_frame adds the frame and clock to the message.
            raise SceneError(f"{self.path}: expression {_shown(self.text)} fails: {exc}") from None
        if not math.isfinite(result):
            raise SceneError(f"{self.path}: expression {_shown(self.text)} is not a finite number")
        return result


def _evaluate(node: ast.expr, clock: float) -> float:
    # Only node kinds that passed _check_expression reach here.
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return clock if node.id == "clock" else _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp):
        op = _BINARY[type(node.op)]
        return float(op(_evaluate(node.left, clock), _evaluate(node.right, clock)))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, clock))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    function = _FUNCTIONS[node.func.id][0]
    return float(function(*(_evaluate(arg, clock) for arg in node.args)))


def _check_expression(node: ast.AST, depth: int = 0) -> str | None:
    """Return why `node` is not allowed, or None when the whole tree is allowed."""
    if depth > MAX_EXPRESSION_DEPTH:
        return "the expression is nested too deeply"
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            return f"the constant {node.value!r} is not allowed (only numbers)"
        try:
            if math.isfinite(float(node.value)):
                return None
        except OverflowError:
            pass
        return f"the number {node.value!r} is too large"
    if isinstance(node, ast.Name):
        if node.id == "clock" or node.id in _CONSTANTS:
            return None
        return f"name {node.id!r} is not allowed (only clock, pi and e)"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        table: dict[Any, Any] = _BINARY if isinstance(node, ast.BinOp) else _UNARY
        if type(node.op) not in table:
            symbol = _OPERATOR_TEXT.get(type(node.op), type(node.op).__name__)
            return f"operator '{symbol}' is not allowed"
        children: list[ast.AST] = (
            [node.left, node.right] if isinstance(node, ast.BinOp) else [node.operand]
        )
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            return "only calls of the listed math functions are allowed"
        name = node.func.id
        if name not in _FUNCTIONS:
            return f"function {name!r} is not allowed (allowed: {', '.join(_FUNCTIONS)})"
        if node.keywords:
            return f"{name}() takes no keyword arguments"
        _, fewest, most = _FUNCTIONS[name]
        if not fewest <= len(node.args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            return f"{name}() takes {wanted} arguments, got {len(node.args)}"
        children = list(node.args)
    else:
        return f"{_NODE_TEXT.get(type(node), type(node).__name__)} is not allowed"
    for child in children:
        problem = _check_expression(child, depth + 1)
        if problem:
            return problem
    return None


def _expression(text: str, path: str) -> Expr:
    source = text.strip()
    if len(source) > MAX_EXPRESSION_CHARS:
        raise SceneError(f"{path}: expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if not source:
        raise SceneError(
            f"{path}: expected a number or an expression of clock, got an empty string"
        )
    try:
        tree = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise SceneError(f"{path}: invalid expression {_shown(source)}: {reason}") from None
    problem = _check_expression(tree)
    if problem:
        raise SceneError(f"{path}: {problem} (in expression {_shown(source)})")
    return Expr(source, path, tree)


# --- the scene model ---------------------------------------------------------------------------

Num = float | Expr
Vec = tuple[Num, Num, Num]


@dataclass(frozen=True)
class Animation:
    initial_frame: int = 1
    final_frame: int = 1
    initial_clock: float = 0.0
    final_clock: float = 1.0


@dataclass(frozen=True)
class Camera:
    position: Vec
    look_at: Vec
    up: Vec
    fov: Num  # horizontal, degrees


@dataclass(frozen=True)
class Background:
    # A flat background has horizon == zenith.
    horizon: Vec
    zenith: Vec


@dataclass(frozen=True)
class Light:
    path: str
    position: Vec
    color: Vec
    intensity: Num


@dataclass(frozen=True)
class Checker:
    color: Vec
    size: Num


@dataclass(frozen=True)
class Material:
    color: Vec
    diffuse: Num
    specular: Num
    shininess: Num
    reflection: Num
    checker: Checker | None


@dataclass(frozen=True)
class Sphere:
    path: str
    center: Vec
    radius: Num
    material: Material


@dataclass(frozen=True)
class Plane:
    # Exactly one of point / offset is set; offset is the distance from the origin along normal.
    path: str
    normal: Vec
    point: Vec | None
    offset: Num | None
    material: Material


@dataclass(frozen=True)
class Box:
    path: str
    min: Vec
    max: Vec
    material: Material


Shape = Sphere | Plane | Box


@dataclass(frozen=True)
class Scene:
    """A validated scene; numbers are floats or `Expr`s until `resolve_frame` fixes a clock."""

    animation: Animation
    camera: Camera
    background: Background
    ambient: Num
    max_depth: int
    antialias: int
    lights: tuple[Light, ...]
    objects: tuple[Shape, ...]


# --- parsing: JSON values -> model -------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"


def _fields(
    value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SceneError(f"{path or 'scene'}: expected an object {{...}}, got {_kind(value)}")
    allowed = required + optional
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
            )
            raise SceneError(f"{_join(path, key)}: unknown key ({hint})")
    for key in required:
        if key not in value:
            raise SceneError(f"{_join(path, key)}: this required field is missing")
    return value


def _number(value: Any, path: str) -> Num:
    if isinstance(value, str):
        return _expression(value, path)
    return _literal(value, path, "a number or an expression string of clock")


def _literal(value: Any, path: str, expected: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SceneError(f"{path}: expected {expected}, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SceneError(f"{path}: expected a finite number, got {value!r}")
    return number


def _integer(value: Any, path: str, lo: int, hi: int) -> int:
    number = _literal(value, path, f"a whole number {lo}..{hi}")
    if not number.is_integer() or not lo <= number <= hi:
        raise SceneError(f"{path}: expected a whole number {lo}..{hi}, got {value!r}")
    return int(number)


def _vec3(value: Any, path: str, what: str = "[x, y, z]") -> Vec:
    if not isinstance(value, list) or len(value) != 3:
        raise SceneError(f"{path}: expected a list of 3 numbers {what}, got {_kind(value)}")
    x, y, z = (_number(item, _join(path, i)) for i, item in enumerate(value))
    return (x, y, z)


def _color(value: Any, path: str) -> Vec:
    return _vec3(value, path, "[r, g, b] in 0..1")


def _list(value: Any, path: str, most: int) -> list[Any]:
    if not isinstance(value, list):
        raise SceneError(f"{path}: expected a list, got {_kind(value)}")
    if len(value) > most:
        raise SceneError(f"{path}: at most {most} entries are allowed, got {len(value)}")
    return value


def _parse_animation(value: Any, path: str) -> Animation:
    keys = ("initial_frame", "final_frame", "initial_clock", "final_clock")
    data = {**dataclasses.asdict(Animation()), **_fields(value, path, (), keys)}
    # Plain numbers only: an expression of clock cannot define the clock.
    frames = [_integer(data[k], _join(path, k), 0, MAX_FRAME) for k in keys[:2]]
    clocks = [_literal(data[k], _join(path, k)) for k in keys[2:]]
    animation = Animation(*frames, *clocks)
    if animation.final_frame < animation.initial_frame:
        raise SceneError(
            f"{_join(path, 'final_frame')}: must be >= initial_frame "
            f"({animation.initial_frame}), got {animation.final_frame}"
        )
    return animation


def _parse_camera(value: Any, path: str) -> Camera:
    data = _fields(value, path, ("position", "look_at"), ("up", "fov"))
    return Camera(
        position=_vec3(data["position"], _join(path, "position")),
        look_at=_vec3(data["look_at"], _join(path, "look_at")),
        up=_vec3(data.get("up", [0, 1, 0]), _join(path, "up")),
        fov=_number(data.get("fov", 60), _join(path, "fov")),
    )


def _parse_background(value: Any, path: str) -> Background:
    if isinstance(value, dict):
        data = _fields(value, path, ("horizon", "zenith"), ())
        return Background(
            _color(data["horizon"], _join(path, "horizon")),
            _color(data["zenith"], _join(path, "zenith")),
        )
    if isinstance(value, list):
        flat = _color(value, path)
        return Background(flat, flat)
    raise SceneError(
        f'{path}: expected a colour [r, g, b] or an object {{"horizon": [r, g, b], '
        f'"zenith": [r, g, b]}}, got {_kind(value)}'
    )


def _parse_light(value: Any, path: str) -> Light:
    data = _fields(value, path, ("position",), ("color", "intensity"))
    return Light(
        path=path,
        position=_vec3(data["position"], _join(path, "position")),
        color=_color(data.get("color", [1, 1, 1]), _join(path, "color")),
        intensity=_number(data.get("intensity", 1.0), _join(path, "intensity")),
    )


def _parse_material(value: Any, path: str, allow_checker: bool) -> Material:
    optional = ("color", "diffuse", "specular", "shininess", "reflection", "checker")
    data = _fields(value, path, (), optional)
    checker = None
    if "checker" in data:
        checker_path = _join(path, "checker")
        if not allow_checker:
            raise SceneError(f"{checker_path}: a checker pattern is only available on planes")
        checker_data = _fields(data["checker"], checker_path, ("color",), ("size",))
        checker = Checker(
            color=_color(checker_data["color"], _join(checker_path, "color")),
            size=_number(checker_data.get("size", 1.0), _join(checker_path, "size")),
        )
    return Material(
        color=_color(data.get("color", [0.8, 0.8, 0.8]), _join(path, "color")),
        diffuse=_number(data.get("diffuse", 0.8), _join(path, "diffuse")),
        specular=_number(data.get("specular", 0.0), _join(path, "specular")),
        shininess=_number(data.get("shininess", 40), _join(path, "shininess")),
        reflection=_number(data.get("reflection", 0.0), _join(path, "reflection")),
        checker=checker,
    )


def _parse_object(value: Any, path: str) -> Shape:
    kind = value.get("type") if isinstance(value, dict) else None

    def material_of(data: dict[str, Any]) -> Material:
        material_path = _join(path, "material")
        return _parse_material(data.get("material", {}), material_path, kind == "plane")

    if kind == "sphere":
        data = _fields(value, path, ("type", "center", "radius"), ("material",))
        return Sphere(
            path,
            _vec3(data["center"], _join(path, "center")),
            _number(data["radius"], _join(path, "radius")),
            material_of(data),
        )
    if kind == "plane":
        data = _fields(value, path, ("type", "normal"), ("point", "offset", "material"))
        if ("point" in data) == ("offset" in data):
            raise SceneError(f"{path}: a plane needs exactly one of 'point' or 'offset'")
        return Plane(
            path,
            _vec3(data["normal"], _join(path, "normal")),
            _vec3(data["point"], _join(path, "point")) if "point" in data else None,
            _number(data["offset"], _join(path, "offset")) if "offset" in data else None,
            material_of(data),
        )
    if kind == "box":
        data = _fields(value, path, ("type", "min", "max"), ("material",))
        return Box(
            path,
            _vec3(data["min"], _join(path, "min")),
            _vec3(data["max"], _join(path, "max")),
            material_of(data),
        )
    if not isinstance(value, dict):
        raise SceneError(f'{path}: expected an object {{"type": ...}}, got {_kind(value)}')
    if "type" not in value:
        raise SceneError(f"{_join(path, 'type')}: this required field is missing")
    raise SceneError(
        f"{_join(path, 'type')}: expected 'sphere', 'plane' or 'box', got {_kind(kind)}"
    )


def _parse_scene(data: Any) -> Scene:
    if isinstance(data, dict) and "format" in data and data["format"] != FORMAT:
        raise SceneError(f"format: expected {FORMAT!r}, got {_kind(data['format'])}")
    optional = ("comment", "animation", "background", "ambient", "max_depth", "antialias")
    optional += ("lights", "objects")
    data = _fields(data, "", ("format", "camera"), optional)
    if "comment" in data and not isinstance(data["comment"], str):
        raise SceneError(f"comment: expected a string, got {_kind(data['comment'])}")
    lights = _list(data.get("lights", []), "lights", MAX_LIGHTS)
    objects = _list(data.get("objects", []), "objects", MAX_OBJECTS)
    return Scene(
        animation=_parse_animation(data.get("animation", {}), "animation"),
        camera=_parse_camera(data["camera"], "camera"),
        background=_parse_background(data.get("background", [0, 0, 0]), "background"),
        ambient=_number(data.get("ambient", 0.1), "ambient"),
        max_depth=_integer(data.get("max_depth", 3), "max_depth", 0, MAX_MAX_DEPTH),
        antialias=_integer(data.get("antialias", 1), "antialias", 1, MAX_ANTIALIAS),
        lights=tuple(_parse_light(item, _join("lights", i)) for i, item in enumerate(lights)),
        objects=tuple(_parse_object(item, _join("objects", i)) for i, item in enumerate(objects)),
    )


def _reject_constant(name: str) -> Any:
    raise SceneError(f"not valid scene JSON: {name} is not a number a scene may contain")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SceneError(f"not valid scene JSON: the key {key!r} appears twice in one object")
        result[key] = value
    return result


def load_scene_text(text: str) -> Scene:
    """Parse and validate scene JSON; raise SceneError naming the field on any problem."""
    if not isinstance(text, str):
        raise SceneError(f"scene text must be a string, got {type(text).__name__}")
    if len(text) > MAX_SCENE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SCENE_BYTES:
        raise SceneError(f"the scene is larger than the limit of {MAX_SCENE_BYTES // 1024} KiB")
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except SceneError:
        raise
    except json.JSONDecodeError as exc:
        raise SceneError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise SceneError("not valid scene JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise SceneError(f"not valid scene JSON: {exc}") from None
    scene = _parse_scene(data)
    for frame in sorted({scene.animation.initial_frame, scene.animation.final_frame}):
        resolve_frame(scene, frame)
    return scene


def builtin_scene_text(name: str) -> str:
    """Return the JSON text of a scene shipped with peerfarm, e.g. "demo" (`builtin:demo`)."""
    folder = resources.files(__package__).joinpath("scenes")
    available = sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )
    if not isinstance(name, str) or not _SCENE_NAME.fullmatch(name) or name not in available:
        raise SceneError(
            f"unknown built-in scene {name!r} (available: {', '.join(available) or 'none'})"
        )
    return folder.joinpath(f"{name}.json").read_text(encoding="utf-8")


# --- frames and clock ----------------------------------------------------------------------------


def scene_frame_range(scene: Scene) -> tuple[int, int]:
    """The scene's (initial_frame, final_frame), both inclusive."""
    return scene.animation.initial_frame, scene.animation.final_frame


def frame_clock(scene: Scene, frame: int) -> float:
    """POV-Ray's rule: the clock runs linearly from initial_clock to final_clock over the frames."""
    a = scene.animation
    if a.final_frame == a.initial_frame:
        return a.initial_clock
    return a.initial_clock + (a.final_clock - a.initial_clock) * (frame - a.initial_frame) / (
        a.final_frame - a.initial_frame
    )


def _resolve(value: Any, clock: float) -> Any:
    if isinstance(value, Expr):
        return value.value(clock)
    if isinstance(value, tuple):
        return tuple(_resolve(item, clock) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return type(value)(**{f.name: _resolve(getattr(value, f.name), clock) for f in fields})
    return value


def _check_range(value: Any, path: str, lo: float, hi: float, *, open_lo: bool = False) -> None:
    if value < lo or value > hi or (open_lo and value == lo):
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        bound = low if math.isinf(hi) else f"{low} and <= {hi:g}"
        raise SceneError(f"{path}: must be {bound}, got {value:g}")


def _check_color(color: Any, path: str) -> None:
    for i, channel in enumerate(color):
        _check_range(channel, _join(path, i), 0.0, 1.0)


def _length(v: Any) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _check_material(m: Any, path: str) -> None:
    _check_color(m.color, _join(path, "color"))
    for name in ("diffuse", "specular", "reflection"):
        _check_range(getattr(m, name), _join(path, name), 0.0, 1.0)
    _check_range(m.shininess, _join(path, "shininess"), 1.0, MAX_SHININESS)
    if m.checker is not None:
        _check_color(m.checker.color, _join(path, "checker.color"))
        _check_range(m.checker.size, _join(path, "checker.size"), 0.0, math.inf, open_lo=True)


def _check_frame_values(s: Any) -> None:
    # `s` is a resolved Scene: every Num is a float by now.
    cam = s.camera
    _check_range(cam.fov, "camera.fov", 0.0, 179.0, open_lo=True)
    forward = tuple(a - b for a, b in zip(cam.look_at, cam.position, strict=True))
    if _length(forward) == 0.0:
        raise SceneError("camera.look_at: must differ from camera.position")
    f, u = forward, cam.up
    cross = (f[1] * u[2] - f[2] * u[1], f[2] * u[0] - f[0] * u[2], f[0] * u[1] - f[1] * u[0])
    if _length(cross) <= 1e-9 * _length(f) * _length(u):
        raise SceneError("camera.up: must not be zero or parallel to the view direction")
    _check_color(s.background.horizon, "background.horizon")
    _check_color(s.background.zenith, "background.zenith")
    _check_range(s.ambient, "ambient", 0.0, 1.0)
    for light in s.lights:
        _check_color(light.color, _join(light.path, "color"))
        _check_range(light.intensity, _join(light.path, "intensity"), 0.0, math.inf)
    for shape in s.objects:
        _check_material(shape.material, _join(shape.path, "material"))
        if isinstance(shape, Sphere):
            _check_range(shape.radius, _join(shape.path, "radius"), 0.0, math.inf, open_lo=True)
        elif isinstance(shape, Plane):
            if _length(shape.normal) == 0.0:
                raise SceneError(f"{_join(shape.path, 'normal')}: must not be [0, 0, 0]")
        else:
            for i in range(3):
                if not shape.min[i] < shape.max[i]:
                    raise SceneError(
                        f"{_join(shape.path, 'max')}[{i}]: must be greater than min[{i}] "
                        f"({shape.min[i]:g}), got {shape.max[i]:g}"
                    )


def resolve_frame(scene: Scene, frame: int) -> Scene:
    """The scene at `frame`'s clock: every expression replaced by a checked float."""
    first, last = scene_frame_range(scene)
    if isinstance(frame, bool) or not isinstance(frame, int) or not first <= frame <= last:
        raise SceneError(f"frame {frame!r} is outside the scene's frame range {first}-{last}")
    clock = frame_clock(scene, frame)
    try:
        resolved = _resolve(scene, clock)
        _check_frame_values(resolved)
    except SceneError as exc:
        raise SceneError(f"{exc} (frame {frame}, clock {clock:g})") from None
    return resolved
