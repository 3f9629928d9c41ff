"""The node machine: every rule of a node, written once, with no I/O.

Events go in (``events``), effects come out (``effects``); the trio runtime and
the simulator are its two drivers. See ``machine.py`` and docs/architecture.md.
"""

from peerfarm.core.refused import Refused
from peerfarm.machine.machine import NodeMachine
from peerfarm.machine.shared import MachineConfig

__all__ = ["MachineConfig", "NodeMachine", "Refused"]
