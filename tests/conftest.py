"""Every test runs with its own farm key, as a real farm would.

Node processes and CLI runs a test starts inherit $PEERFARM_FARM_KEY_FILE, and
tests/farmtools.py's clients read it, so the TLS handshake and the farm-key
proof are exercised by every multi-process test. In-process nodes built with
NodeConfig get a key only when the test passes one.
"""

from __future__ import annotations

import pytest

from peerfarm.security.farm_key import ENV_VAR, new_key, write_key


@pytest.fixture(autouse=True)
def farm_key_file(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.mktemp("farm-key") / "farm.key"
    write_key(new_key(), path)
    monkeypatch.setenv(ENV_VAR, str(path))
    return path
