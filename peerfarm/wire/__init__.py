"""The wire protocol: msgpack framing with strict limits and the schema of every message."""
