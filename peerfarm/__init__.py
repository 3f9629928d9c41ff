"""peerfarm: a peer-to-peer render farm with no master.

Layers, dependencies pointing down only:
  peerfarm.core      pure: actions, reducers, the ordered log, scheduling decisions
  peerfarm.wire      pure: message framing and schemas of the wire protocol
  peerfarm.runtime   trio: the node (mesh, worker, disk, output collection)
  faces              peerfarm.cli, bootstrap_server, ui (desktop app)
"""

__version__ = "0.1.0"
