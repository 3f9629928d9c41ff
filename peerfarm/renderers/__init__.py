"""Renderers the farm can drive; `builtin` is the default one, needing no external program."""
