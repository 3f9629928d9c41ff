"""A POV-Ray scene for re-render tests: slow or fast by one small include file."""

from __future__ import annotations

import io
import random

from PIL import Image

INI = (
    "Input_File_Name=scene.pov\nWidth=48\nHeight=36\n"
    "Initial_Frame=1\nFinal_Frame=9\nInitial_Clock=0\nFinal_Clock=1\n"
)
SCENE = (
    "#version 3.7;\n"
    '#include "ball.inc"\n'
    # Parsing this loop is what makes a frame slow (about a second per million on one core).
    "#declare I = 0; #while (I < Slow) #declare I = I + 1; #end\n"
    "global_settings { assumed_gamma 1.0 }\n"
    "camera { location <0, 0, -3> look_at 0 }\n"
    "light_source { <0, 0, -10> rgb 1 }\n"
    'plane { z, 2 pigment { image_map { png "textures/noise.png" } scale 4 } }\n'
    "sphere { <clock * 0.2, 0, 0>, 1 pigment { BallColour } finish { ambient 1 diffuse 0 } }\n"
)


def ball_inc(slow: int, colour: str) -> bytes:
    return f"#declare Slow = {slow};\n#declare BallColour = rgb {colour};\n".encode()


SLOW_RED = ball_inc(30_000_000, "<1, 0, 0>")
FAST_GREEN = ball_inc(0, "<0, 1, 0>")


def noise_png(side: int = 320) -> bytes:
    """A texture that does not compress: the big file that must not travel twice."""
    rng = random.Random(14)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def scene_files(ball: bytes) -> dict[str, bytes]:
    return {
        "scene.ini": INI.encode(),
        "scene.pov": SCENE.encode(),
        "ball.inc": ball,
        "textures/noise.png": noise_png(),
    }
