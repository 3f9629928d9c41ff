"""The trio runtime: the node object and what it owns (links, worker, disk, outputs)."""
