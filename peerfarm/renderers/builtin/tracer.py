"""The built-in renderer's ray tracer: a scene and a frame number in, RGB pixels (and a PNG) out.

All rays of a band of rows are traced at once with NumPy; reflections recurse
on just the rays that hit a reflective surface. Vectors are (3, N) float64
arrays and dot products are written out per component.

Determinism: pixel data only ever meets IEEE-exact operations (+ - * /, sqrt,
floor, comparisons), never transcendental ufuncs (their SIMD versions differ
between CPUs) nor reductions whose summation order NumPy may choose. Gamma is
therefore 2.0 (a square root) and the specular exponent is a whole number
(repeated squaring). Antialiasing uses a fixed sample grid, no jitter. The same
scene, frame and size give the same bytes on every machine; the only scalar
math-library calls are in clock expressions and the camera's tan(fov / 2).
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peerfarm.core.tiles import Box as Region
from peerfarm.disk import replace_file

from .scene import Box, Plane, Scene, Sphere, resolve_frame

MAX_IMAGE_SIDE = 16384
# Rays traced per NumPy pass: bounds memory on big frames; results do not depend on it.
BAND_RAYS = 1 << 16
# Secondary rays start this far off the surface, along the normal, so a surface does
# not shadow or reflect itself ("shadow acne"). Scene units; scenes are ~0.1..1000 units.
SURFACE_OFFSET = 1e-4
T_MIN = 1e-9

Array = np.ndarray


def _dot(a: Array, b: Array) -> Array:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalize(v: Array) -> Array:
    return v / np.sqrt(_dot(v, v))


def _column(values: tuple[float, ...]) -> Array:
    return np.array(values, dtype=np.float64).reshape(3, 1)


def _linear(color: tuple[float, ...]) -> Array:
    # Scene colours are what the eye should see; shading happens in linear light (gamma 2.0).
    c = _column(color)
    return c * c


class _Sphere:
    def __init__(self, s: Sphere) -> None:
        self.center = _column(s.center)
        self.radius = float(s.radius)

    def intersect(self, o: Array, d: Array) -> Array:
        oc = o - self.center
        b = _dot(oc, d)
        disc = b * b - (_dot(oc, oc) - self.radius * self.radius)
        t = np.full(d.shape[1], np.inf)
        # Most rays miss a given sphere: finish the arithmetic on the few that do not.
        hit = np.nonzero(disc >= 0.0)[0]
        if hit.size:
            root = np.sqrt(disc[hit])
            near_b = -b[hit]
            first = near_b - root
            first = np.where(first > T_MIN, first, near_b + root)
            t[hit] = np.where(first > T_MIN, first, np.inf)
        return t

    def normal(self, p: Array) -> Array:
        return (p - self.center) / self.radius


class _Plane:
    def __init__(self, s: Plane) -> None:
        self.n = _normalize(_column(s.normal))
        self.point = _column(s.point) if s.point is not None else self.n * float(s.offset)
        self.offset = float(_dot(self.n, self.point)[0])
        # In-plane axes for the checker pattern, fixed by the normal alone.
        helper = _column((1.0, 0.0, 0.0) if abs(self.n[0, 0]) < 0.9 else (0.0, 1.0, 0.0))
        self.u = _normalize(helper - _dot(helper, self.n) * self.n)
        n, u = self.n[:, 0], self.u[:, 0]
        self.v = _column(
            (n[1] * u[2] - n[2] * u[1], n[2] * u[0] - n[0] * u[2], n[0] * u[1] - n[1] * u[0])
        )

    def intersect(self, o: Array, d: Array) -> Array:
        denom = _dot(d, self.n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - _dot(o, self.n)) / denom
        # NaN compares false, so parallel rays fall out here too.
        return np.where(t > T_MIN, t, np.inf)

    def normal(self, p: Array) -> Array:
        return np.broadcast_to(self.n, p.shape)


class _Box:
    def __init__(self, s: Box) -> None:
        self.lo = _column(s.min)
        self.hi = _column(s.max)
        self.center = (self.lo + self.hi) * 0.5
        self.half = (self.hi - self.lo) * 0.5

    def intersect(self, o: Array, d: Array) -> Array:
        near = np.full(d.shape[1], -np.inf)
        far = np.full(d.shape[1], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                inv = 1.0 / d[axis]
                t1 = (self.lo[axis, 0] - o[axis]) * inv
                t2 = (self.hi[axis, 0] - o[axis]) * inv
                # fmin/fmax skip the NaN of a ray lying exactly in a face's plane.
                near = np.fmax(near, np.fmin(t1, t2))
                far = np.fmin(far, np.fmax(t1, t2))
        t = np.where(near > T_MIN, near, far)
        return np.where((far >= near) & (t > T_MIN), t, np.inf)

    def normal(self, p: Array) -> Array:
        q = (p - self.center) / self.half
        a = np.abs(q)
        on_x = (a[0] >= a[1]) & (a[0] >= a[2])
        on_y = ~on_x & (a[1] >= a[2])
        n = np.zeros_like(p)
        for axis, on in ((0, on_x), (1, on_y), (2, ~on_x & ~on_y)):
            n[axis] = np.where(on, np.where(q[axis] >= 0.0, 1.0, -1.0), 0.0)
        return n


@dataclass
class _Light:
    position: Array
    rgb: Array


class _World:
    """A resolved scene turned into arrays the tracer indexes by object number."""

    def __init__(self, scene: Scene) -> None:
        makers = {Sphere: _Sphere, Plane: _Plane, Box: _Box}
        self.shapes = [makers[type(shape)](shape) for shape in scene.objects]
        materials = [shape.material for shape in scene.objects]
        self.color = np.concatenate([_linear(m.color) for m in materials] or [np.zeros((3, 0))], 1)
        self.diffuse = np.array([m.diffuse for m in materials], dtype=np.float64)
        self.specular = np.array([m.specular for m in materials], dtype=np.float64)
        self.shininess = np.array([round(m.shininess) for m in materials], dtype=np.int64)
        self.reflection = np.array([m.reflection for m in materials], dtype=np.float64)
        self.checkers = [
            (k, self.shapes[k], _linear(m.checker.color), float(m.checker.size))
            for k, m in enumerate(materials)
            if m.checker is not None
        ]
        self.lights = [
            _Light(_column(light.position), _linear(light.color) * float(light.intensity))
            for light in scene.lights
        ]
        self.ambient = float(scene.ambient)
        self.max_depth = scene.max_depth
        self.horizon = _linear(scene.background.horizon)
        self.zenith = _linear(scene.background.zenith)

    def sky(self, d: Array) -> Array:
        # sqrt makes the sky's colour change fastest near the horizon, as a real sky does.
        t = np.sqrt(np.clip(d[1], 0.0, 1.0))
        return self.horizon + (self.zenith - self.horizon) * t

    def closest(self, o: Array, d: Array) -> tuple[Array, Array]:
        best = np.full(d.shape[1], np.inf)
        ids = np.full(d.shape[1], -1, dtype=np.intp)
        for k, shape in enumerate(self.shapes):
            t = shape.intersect(o, d)
            closer = t < best  # strict: on a tie the earlier object wins, always the same one
            best = np.where(closer, t, best)
            ids[closer] = k
        return best, ids

    def blocked(self, o: Array, d: Array, distance: Array) -> Array:
        hit = np.zeros(d.shape[1], dtype=bool)
        for shape in self.shapes:
            hit |= shape.intersect(o, d) < distance
        return hit


def _whole_power(base: Array, exponent: Array) -> Array:
    """base ** exponent for whole exponents by repeated squaring (exact the world over)."""
    result = np.ones_like(base)
    e = exponent.copy()
    while np.any(e > 0):
        result = np.where((e & 1) == 1, result * base, result)
        base = base * base
        e >>= 1
    return result


def _trace(world: _World, o: Array, d: Array, depth: int) -> Array:
    t, ids = world.closest(o, d)
    color = world.sky(d)
    hit = np.nonzero(ids >= 0)[0]
    if hit.size:
        # Camera rays share one origin, passed as a single (3, 1) column.
        o_hit = o if o.shape[1] == 1 else o[:, hit]
        color[:, hit] = _shade(world, o_hit, d[:, hit], t[hit], ids[hit], depth)
    return color


def _shade(world: _World, o: Array, d: Array, t: Array, ids: Array, depth: int) -> Array:
    p = o + d * t
    normal = np.empty_like(p)
    base = world.color[:, ids]
    for k, shape in enumerate(world.shapes):
        mine = np.nonzero(ids == k)[0]
        if mine.size:
            normal[:, mine] = shape.normal(p[:, mine])
    for k, plane, second, size in world.checkers:
        mine = np.nonzero(ids == k)[0]
        if mine.size:
            rel = p[:, mine] - plane.point
            cells = np.floor(_dot(rel, plane.u) / size) + np.floor(_dot(rel, plane.v) / size)
            odd = np.mod(cells, 2.0) == 1.0
            base[:, mine] = np.where(odd, second, base[:, mine])
    # Shade the side the ray came from.
    normal *= np.where(_dot(normal, d) > 0.0, -1.0, 1.0)
    origin = p + normal * SURFACE_OFFSET

    diffuse_light = np.zeros_like(p)
    specular_light = np.zeros_like(p)
    shininess = world.shininess[ids]
    has_specular = world.specular[ids] > 0.0
    for light in world.lights:
        to_light = light.position - origin
        distance = np.sqrt(_dot(to_light, to_light))
        to_light = to_light / distance
        facing = _dot(normal, to_light)
        lit = facing > 0.0
        candidates = np.nonzero(lit)[0]
        if candidates.size:
            shadowed = world.blocked(
                origin[:, candidates], to_light[:, candidates], distance[candidates]
            )
            lit[candidates[shadowed]] = False
        diffuse_light += np.where(lit, facing, 0.0) * light.rgb
        halfway = to_light - d
        halfway = halfway / np.maximum(np.sqrt(_dot(halfway, halfway)), 1e-300)
        shiny = np.nonzero(lit & has_specular)[0]
        if shiny.size:
            highlight = np.maximum(_dot(normal[:, shiny], halfway[:, shiny]), 0.0)
            specular_light[:, shiny] += _whole_power(highlight, shininess[shiny]) * light.rgb

    reflection = world.reflection[ids]
    local = base * (world.ambient + world.diffuse[ids] * diffuse_light)
    color = (1.0 - reflection) * local + world.specular[ids] * specular_light
    mirror = np.nonzero(reflection > 0.0)[0]
    if mirror.size:
        n = normal[:, mirror]
        bounce = d[:, mirror] - 2.0 * _dot(d[:, mirror], n) * n
        if depth < world.max_depth:
            seen = _trace(world, origin[:, mirror], bounce, depth + 1)
        else:
            seen = world.sky(bounce)
        color[:, mirror] += reflection[mirror] * seen
    return color


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"image {name} must be an integer, got {value!r}")
        if not 1 <= value <= MAX_IMAGE_SIDE:
            raise ValueError(f"image {name} must be 1..{MAX_IMAGE_SIDE}, got {value}")


def render_frame(
    scene: Scene, frame: int, width: int, height: int, region: Region | None = None
) -> np.ndarray:
    """Render `frame` of `scene` as a height x width x 3 uint8 array (sRGB-ish, gamma 2.0).

    With `region`, only those pixels of the width x height frame are traced and
    returned (region.height x region.width x 3): each pixel depends on its own
    position only, so they are exactly the pixels of the whole frame there.
    """
    _check_size(width, height)
    if region is None:
        region = Region(0, 0, width, height)
    if not (0 <= region.left < region.right <= width and 0 <= region.top < region.bottom <= height):
        raise ValueError(f"region {tuple(region)} is not inside a {width}x{height} image")
    resolved = resolve_frame(scene, frame)
    world = _World(resolved)
    cam = resolved.camera
    eye = _column(cam.position)
    forward = _normalize(_column(cam.look_at) - eye)[:, 0]
    up = np.array(cam.up, dtype=np.float64)
    right = np.array(
        [
            forward[1] * up[2] - forward[2] * up[1],
            forward[2] * up[0] - forward[0] * up[2],
            forward[0] * up[1] - forward[1] * up[0],
        ]
    )
    right = right / math.sqrt(right[0] * right[0] + right[1] * right[1] + right[2] * right[2])
    true_up = np.array(
        [
            right[1] * forward[2] - right[2] * forward[1],
            right[2] * forward[0] - right[0] * forward[2],
            right[0] * forward[1] - right[1] * forward[0],
        ]
    )
    half_width = math.tan(math.radians(cam.fov) / 2.0)
    half_height = half_width * height / width  # square pixels

    n = resolved.antialias
    offsets = [(i + 0.5) / n for i in range(n)]
    columns = np.arange(region.left, region.right, dtype=np.float64)
    count = columns.size
    rows_per_band = max(1, BAND_RAYS // count)
    image = np.empty((region.height, count, 3), dtype=np.uint8)
    for top in range(region.top, region.bottom, rows_per_band):
        rows = np.arange(top, min(top + rows_per_band, region.bottom), dtype=np.float64)
        total = np.zeros((3, rows.size * count))
        for dy in offsets:
            v = (1.0 - 2.0 * (rows + dy) / height) * half_height
            for dx in offsets:
                u = (2.0 * (columns + dx) / width - 1.0) * half_width
                uu = np.tile(u, rows.size)
                vv = np.repeat(v, count)
                d = np.stack([forward[i] + uu * right[i] + vv * true_up[i] for i in range(3)])
                d = _normalize(d)
                total += _trace(world, eye, d, 0)
        linear = total / float(n * n)
        encoded = np.rint(np.sqrt(np.clip(linear, 0.0, 1.0)) * 255.0).astype(np.uint8)
        band = top - region.top
        image[band : band + rows.size] = encoded.T.reshape(rows.size, count, 3)
    return image


# The formats the renderer writes (peerfarm.formats names) -> Pillow's name and options.
# No metadata and fixed settings everywhere: same pixels, same bytes.
IMAGE_FORMATS: dict[str, tuple[str, dict[str, object]]] = {
    "png": ("PNG", {"compress_level": 6}),
    "jpg": ("JPEG", {"quality": 95}),
    "tiff": ("TIFF", {}),
    "bmp": ("BMP", {}),
}


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write pixels as a PNG so that a reader sees either no file or the whole, synced file."""
    save_image(pixels, path, "png")


def save_image(pixels: np.ndarray, path: Path, fmt: str) -> None:
    """Write pixels in ``fmt`` (a key of IMAGE_FORMATS) so that a reader sees either no
    file or the whole, synced file."""
    from PIL import Image  # only the process that writes frames pays for importing Pillow

    pillow_name, settings = IMAGE_FORMATS[fmt]

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(
            f"expected a height x width x 3 uint8 array, got {pixels.dtype} {pixels.shape}"
        )
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(pixels))  # uint8 H x W x 3 is RGB
    # Same directory, so os.replace is an atomic rename; a unique name so writers never collide.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            image.save(file, format=pillow_name, **settings)
            file.flush()
            os.fsync(file.fileno())
        replace_file(temp, path)  # Windows: retried while a viewer holds the frame
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        # Make the rename itself durable before the caller reports the frame as done.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
