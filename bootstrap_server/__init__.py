"""The bootstrap server: the farm's meeting point, run as a peer that never renders.

It answers a joining node with the known-worker list (KWL) and its version
vector, streams it the replicated log so it can render at once, and mirrors the
state through the same reducers as every node. When it dies, the farm goes on.
"""
