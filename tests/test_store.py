"""The log file: crash-safe appends; a torn last record is dropped with a warning."""

from __future__ import annotations

import logging

from factories import A, new_job_payload

from peerfarm.core.actions import validate_action
from peerfarm.core.log import ActionLog
from peerfarm.runtime.store import LogFile, load_identity, save_identity


def records(n):
    log = ActionLog()
    out = []
    for i in range(n):
        a = log.create(A, "NEW_JOB", new_job_payload(f"job{i}"))
        log.add(a)
        out.append(a.to_wire())
    return out


def test_round_trip(tmp_path):
    f = LogFile(tmp_path / "log.bin")
    f.append(records(3)[:2])
    f.append(records(3)[2:])
    assert f.load() == records(3)


def test_cut_in_the_middle_of_the_last_record_reloads(tmp_path, caplog):
    path = tmp_path / "log.bin"
    f = LogFile(path)
    f.append(records(5))
    full = path.stat().st_size
    for cut in (full - 1, full - 20, full - 60):
        f.append([])  # no-op
        path.write_bytes(path.read_bytes()[:cut])
        with caplog.at_level(logging.WARNING):
            loaded = f.load()
        assert loaded == records(5)[: len(loaded)] and len(loaded) == 4
        assert "dropping it" in caplog.text
        f.append(records(5)[4:])  # appending after the cut works
        assert f.load() == records(5)


def test_bad_checksum_drops_the_tail(tmp_path):
    path = tmp_path / "log.bin"
    f = LogFile(path)
    f.append(records(3))
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert f.load() == records(3)[:2]
    assert all(validate_action(r) for r in f.load())


def test_name_and_id_are_kept(tmp_path):
    # The id itself comes from the node's certificate (tests/test_security.py).
    assert load_identity(tmp_path, "n") == {"node_id": "", "name": "n"}
    save_identity(tmp_path, {"node_id": "ab" * 32, "name": "lab-3"})
    assert load_identity(tmp_path, "other") == {"node_id": "ab" * 32, "name": "lab-3"}
