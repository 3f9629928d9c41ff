"""The frozen app's entry point (PyInstaller runs this file as `peerfarm`).

    peerfarm                  the desktop app (what a double-click starts)
    peerfarm -m MODULE ARGS   run MODULE as `python -m MODULE ARGS` would
    peerfarm COMMAND ...      the `peerfarm` command line (node, submit, demo, gui, ...)

Why `-m`: the worker starts each renderer as `sys.executable -m
peerfarm.renderers.builtin ...` (and `peerfarm demo` starts nodes as
`sys.executable -m peerfarm ...`). In a frozen app sys.executable is this app,
not a Python interpreter, so the app itself must understand `-m MODULE`; with
that, every such call in peerfarm works unchanged.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys


def main() -> int:
    # macOS (before 10.9) passes -psn_0_NNN to an app started from the Finder.
    argv = [arg for arg in sys.argv[1:] if not arg.startswith("-psn_")]
    if argv[:1] == ["-m"]:
        if len(argv) < 2:
            print("peerfarm: error: -m needs a module name", file=sys.stderr)
            return 2
        module = argv[1]
        if importlib.util.find_spec(module) is None:
            print(f"peerfarm: error: no module named {module} in this app", file=sys.stderr)
            return 1
        sys.argv = [module, *argv[2:]]
        # Like `python -m`: the module runs as __main__ and its SystemExit ends the process.
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    if not argv:
        from ui.launch import main as gui_main

        return gui_main([])
    from peerfarm.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
