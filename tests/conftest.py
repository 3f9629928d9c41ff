"""The test session runs with its own farm key, as a real farm would.

Node processes and CLI runs a test starts inherit $PEERFARM_FARM_KEY_FILE, and
tests/farmtools.py's clients read it, so the TLS handshake and the farm-key
proof are exercised by every multi-process test. In-process nodes built with
NodeConfig get a key only when the test passes one. Session-scoped, so farms
shared by a module's tests (module-scoped fixtures) have it too.
"""

from __future__ import annotations

import pytest

from peerfarm.security.farm_key import ENV_VAR, new_key, write_key


@pytest.fixture(scope="session", autouse=True)
def farm_key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("farm-key") / "farm.key"
    write_key(new_key(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def no_config_files(tmp_path_factory):
    """Commands read no config file of this machine or its user (peerfarm/ops/config.py):
    the per-user and system-wide places point into empty folders."""
    root = tmp_path_factory.mktemp("config-places")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(root / "user"))
        patch.setenv("XDG_CONFIG_DIRS", str(root / "system"))
        for name in ("PEERFARM_CONFIG", "PEERFARM_SERVICE", "STATE_DIRECTORY"):
            patch.delenv(name, raising=False)
        yield root
