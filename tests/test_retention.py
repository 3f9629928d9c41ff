"""Retention: what a node deletes from its data folder (core/retention.py, pure) and
how it does it on a real disk (runtime/retention.py). Nothing a live job needs is
ever deleted; frames go only after their submitter holds them and the grace; a
budget is held oldest first; a dry run deletes nothing; a file that cannot be
deleted is reported, and the run goes on."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import trio
from factories import A, B, act, joined_payload, new_job_payload

from peerfarm.core.log import ActionLog
from peerfarm.core.retention import (
    BLOBS,
    DAY,
    FRAMES,
    LOGS,
    WORK,
    Item,
    Policy,
    plan,
)
from peerfarm.core.state import State
from peerfarm.runtime.data_dir import DataDir
from peerfarm.runtime.retention import Retention, delete_planned, list_items

NOW = 1_000_000_000.0
SHA_LIVE = "1" * 64
SHA_DONE = "2" * 64
SHA_LOOSE = "3" * 64


class Farm:
    """A replicated state built by the real reducers: B renders, A submits."""

    def __init__(self) -> None:
        self.log = ActionLog()
        self.seq = {A: 0, B: 0}
        self.lamport = 0
        self.emit(B, "PEER_JOINED", joined_payload("b"))

    def emit(self, origin: str, kind: str, payload: dict) -> None:
        self.seq[origin] += 1
        self.lamport += 1
        assert self.log.add(act(kind, payload, origin, self.seq[origin], self.lamport))

    def job(self, job_id: str, files: dict | None = None, frames=(1, 2)) -> None:
        payload = new_job_payload(job_id, frames=frames, chunk=1)
        payload["files"] = files or {}
        self.emit(A, "NEW_JOB", payload)

    def render(self, job_id: str, chunks: range) -> None:
        for chunk in chunks:
            self.emit(B, "CLAIM_CHUNK", {"job_id": job_id, "chunk": chunk})
            claim_seq = self.seq[B]
            self.emit(B, "DONE", {"job_id": job_id, "chunk": chunk, "claim_seq": claim_seq})

    def fail(self, job_id: str, chunk: int = 0) -> None:
        for _ in range(3):
            self.emit(B, "CLAIM_CHUNK", {"job_id": job_id, "chunk": chunk})
            claim_seq = self.seq[B]
            payload = {"job_id": job_id, "chunk": chunk, "claim_seq": claim_seq, "error": "x"}
            self.emit(B, "CHUNK_FAILED", payload)

    @property
    def state(self) -> State:
        return self.log.state


def every_kind_of_job() -> Farm:
    """active, paused, failed, done (not collected), collected, cancelled."""
    farm = Farm()
    for job_id in ("active", "paused", "failed", "done", "collected", "cancelled"):
        farm.job(job_id, {"scene.pov": {"sha": SHA_DONE, "size": 10}})
    farm.job("live-blob", {"scene.pov": {"sha": SHA_LIVE, "size": 10}})
    farm.render("active", range(1))
    farm.render("paused", range(1))
    farm.emit(A, "PAUSE_JOB", {"job_id": "paused"})
    farm.fail("failed")
    farm.render("done", range(2))
    farm.render("collected", range(2))
    farm.emit(A, "JOB_COLLECTED", {"job_id": "collected"})
    farm.emit(A, "CANCEL_JOB", {"job_id": "cancelled"})
    states = {j.id: (j.state, j.paused, j.collected) for j in farm.state.jobs.values()}
    assert states == {
        "active": ("active", False, False),
        "paused": ("active", True, False),
        "failed": ("failed", False, False),
        "done": ("done", False, False),
        "collected": ("done", False, True),
        "cancelled": ("cancelled", False, False),
        "live-blob": ("active", False, False),
    }
    return farm


def items_of(jobs, age: float, size: int = 100) -> list[Item]:
    return [Item(kind, job, size, NOW - age) for job in jobs for kind in (FRAMES, WORK, LOGS)]


def deleted(p) -> set[tuple[str, str]]:
    return {(d.item.kind, d.item.name) for d in p.delete}


# -- the policy -----------------------------------------------------------------------


def test_nothing_a_live_job_needs_is_ever_deleted():
    """Active, paused and failed jobs, and done ones their submitter has not collected
    yet, keep their frames, work folders, logs and blobs: however old, however small
    the budget, however short the grace."""
    state = every_kind_of_job().state
    live = ("active", "paused", "failed", "done", "live-blob")
    items = items_of(live, age=365 * DAY) + [Item(BLOBS, f"11/{SHA_LIVE}", 10, NOW - 365 * DAY)]
    policy = Policy(grace=0, max_age=0, budget=0, min_age=0)
    p = plan(state, items, policy, NOW, {})
    assert p.delete == ()
    assert p.needed == p.total == 15 * 100 + 10
    assert p.over_budget == p.total  # said, not acted on


def test_a_blob_a_live_job_names_stays_even_if_a_finished_job_named_it_too():
    state = every_kind_of_job().state  # SHA_DONE: named by live and finished jobs alike
    blob = Item(BLOBS, f"22/{SHA_DONE}", 10, NOW - 365 * DAY)
    assert plan(state, [blob], Policy(max_age=0, budget=0), NOW, {}).delete == ()


def test_frames_go_only_after_the_submitter_holds_them_and_the_grace():
    state = every_kind_of_job().state
    frames = [Item(FRAMES, job, 100, NOW - 30 * DAY) for job in ("done", "collected")]
    policy = Policy(grace=3600, max_age=365 * DAY, budget=0)
    # Collected 10 minutes ago: in the grace, even over the budget.
    p = plan(state, frames, policy, NOW, {"collected": NOW - 600})
    assert p.delete == () and p.in_grace == 100 and p.needed == 100
    # A job seen collected for the first time now: its grace starts now.
    assert plan(state, frames, policy, NOW, {}).delete == ()
    # After the grace: the collected job's frames go; the uncollected job's stay.
    p = plan(state, frames, policy, NOW, {"collected": NOW - 3601})
    assert deleted(p) == {(FRAMES, "collected")}
    assert "its submitter holds them" in p.delete[0].reason


def test_what_finished_jobs_left_expires_by_age():
    state = every_kind_of_job().state
    finished = ("collected", "cancelled")
    policy = Policy(grace=0, max_age=7 * DAY)
    young = plan(state, items_of(finished, age=DAY), policy, NOW, {"collected": NOW - DAY})
    assert deleted(young) == {(FRAMES, "collected")}  # a cancelled job's frames wait too
    policy = Policy(grace=30 * DAY, max_age=7 * DAY)  # the collected frames in their grace
    old = plan(state, items_of(finished, age=8 * DAY), policy, NOW, {"collected": NOW})
    assert deleted(old) == {(k, j) for j in finished for k in (WORK, LOGS)} | {
        (FRAMES, "cancelled")
    }
    assert all("unused for 8 days" in d.reason for d in old.delete)


def test_blobs_no_live_job_names_expire_and_young_ones_stay():
    state = every_kind_of_job().state
    loose = [
        Item(BLOBS, f"33/{SHA_LOOSE}", 10, NOW - 8 * DAY),  # old: goes
        Item(BLOBS, f"partial/{SHA_LOOSE}", 10, NOW - 8 * DAY),  # an upload given up
        Item(BLOBS, "tmp/x.tmp", 10, NOW - 3600),  # left by an interrupted write
        Item(BLOBS, f"44/{'4' * 64}", 10, NOW - 60),  # just uploaded: its SUBMIT comes
        Item(BLOBS, "tmp/y.tmp", 10, NOW - 60),  # being written
    ]
    p = plan(state, loose, Policy(max_age=7 * DAY, budget=0, min_age=600), NOW, {})
    assert deleted(p) == {
        (BLOBS, f"33/{SHA_LOOSE}"),
        (BLOBS, f"partial/{SHA_LOOSE}"),
        (BLOBS, "tmp/x.tmp"),
    }
    assert p.over_budget == 20  # the young ones, kept over the budget


def test_the_budget_is_held_oldest_first():
    state = every_kind_of_job().state
    # Nine 100-byte items of finished jobs, aged 9 .. 1 days, and live ones.
    items = [
        Item(kind, job, 100, NOW - age * DAY)
        for age, (kind, job) in zip(
            range(9, 0, -1),
            [(k, j) for j in ("collected", "cancelled", "gone-job") for k in (FRAMES, WORK, LOGS)],
            strict=True,
        )
    ]
    items += items_of(("active",), age=20 * DAY)  # 300 bytes needed
    policy = Policy(grace=30 * DAY, max_age=30 * DAY, budget=650)
    p = plan(state, items, policy, NOW, {"collected": NOW})
    # 1200 bytes; collected frames (age 9 d) are in their grace; the rest goes oldest
    # first until 650 are left: work and logs of "collected" (8, 7 d), then "cancelled"
    # frames, work (6, 5 d) -> 800, 700, 600 left.
    gone = [(d.item.kind, d.item.name) for d in p.delete]
    assert (
        gone
        == [
            (WORK, "collected"),
            (LOGS, "collected"),
            (FRAMES, "cancelled"),
            (WORK, "cancelled"),
            (LOGS, "cancelled"),
            (FRAMES, "gone-job"),
        ][: len(gone)]
    )
    assert p.total - p.freed() <= 650 and p.over_budget == 0
    assert p.total - p.freed() + 100 > 650  # no more than needed
    assert all("over the budget" in d.reason for d in p.delete)


def test_files_of_jobs_the_node_does_not_know():
    state = every_kind_of_job().state
    policy = Policy(max_age=7 * DAY, budget=0, min_age=600)
    fresh = plan(state, items_of(("new-job",), age=60), policy, NOW, {})
    assert fresh.delete == ()  # its NEW_JOB may be on the way
    old = plan(state, items_of(("old-job",), age=8 * DAY), policy, NOW, {})
    assert len(old.delete) == 3 and "does not know" in old.delete[0].reason


def test_nothing_changed_in_the_last_minutes_goes_but_collected_frames_past_their_grace():
    """A renderer stopped by a cancel may still be writing its work folder and log."""
    state = every_kind_of_job().state
    policy = Policy(grace=0, max_age=0, budget=0, min_age=600)
    p = plan(state, items_of(("collected", "cancelled"), age=60), policy, NOW, {})
    assert deleted(p) == {(FRAMES, "collected")}
    assert p.over_budget == 500


def test_job_collected_counts_only_from_the_submitter_of_a_done_job():
    farm = Farm()
    farm.job("j")
    farm.emit(A, "JOB_COLLECTED", {"job_id": "j"})  # not done yet
    farm.render("j", range(1))
    farm.emit(B, "JOB_COLLECTED", {"job_id": "j"})  # not its submitter
    farm.render("j", range(1, 2))
    assert not farm.state.jobs["j"].collected
    farm.emit(A, "JOB_COLLECTED", {"job_id": "j"})
    job = farm.state.jobs["j"]
    assert job.state == "done" and job.collected
    farm.emit(A, "CHUNK_LOST", {"job_id": "j", "chunk": 0, "holder": B})
    assert farm.state.jobs["j"] == job  # the submitter holds every frame: nothing lost


# -- on a real disk -------------------------------------------------------------------


def make_data_dir(root: Path, farm: Farm, age: float) -> DataDir:
    """Frames, work, logs of every job and blobs, all ``age`` seconds old."""
    data = DataDir(root)
    for job_id in farm.state.jobs:
        for kind in (FRAMES, WORK, LOGS):
            folder = data.job_dir(kind, job_id)
            (folder / "sub").mkdir(parents=True)
            (folder / "a.bin").write_bytes(b"x" * 1000)
            (folder / "sub" / "b.bin").write_bytes(b"y" * 24)
    for sha in (SHA_LIVE, SHA_DONE, SHA_LOOSE):
        path = data.blobs / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"z" * 10)
    stamp = NOW - age
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (stamp, stamp))
    return data


def run_retention(data: DataDir, farm: Farm, policy: Policy, dry_run=False, since=None):
    retention = Retention(data, policy, lambda: farm.state, clock=lambda: NOW)
    retention.collected_since.update(since or {})
    return trio.run(retention.run, dry_run)


LIVE_JOBS = ("active", "paused", "failed", "done", "live-blob")


def left_on_disk(data: DataDir) -> set[tuple[str, str]]:
    return {(i.kind, i.name) for i in list_items(data)}


def test_a_run_deletes_what_finished_jobs_left_and_keeps_what_live_jobs_need(tmp_path):
    farm = every_kind_of_job()
    data = make_data_dir(tmp_path / "data", farm, age=30 * DAY)
    policy = Policy(grace=3600, max_age=7 * DAY)
    dry = run_retention(data, farm, policy, dry_run=True, since={"collected": NOW - 7200})
    before = left_on_disk(data)
    assert len(before) == 7 * 3 + 3  # a dry run deletes nothing ...
    rep = run_retention(data, farm, policy, since={"collected": NOW - 7200})
    # ... and says what a run deletes.
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {
        k: v for k, v in rep.items() if k != "dry_run"
    }
    kept = left_on_disk(data)
    assert kept == {(k, j) for j in LIVE_JOBS for k in (FRAMES, WORK, LOGS)} | {
        (BLOBS, f"11/{SHA_LIVE}"),
        (BLOBS, f"22/{SHA_DONE}"),
    }
    assert not (data.root / "frames" / "collected").exists()
    assert rep["freed"] == {
        "frames": {"count": 2, "bytes": 2048},
        "work": {"count": 2, "bytes": 2048},
        "logs": {"count": 2, "bytes": 2048},
        "blobs": {"count": 1, "bytes": 10},
    }
    assert rep["freed_bytes"] == 3 * 2048 + 10 and rep["errors"] == []
    assert rep["needed_bytes"] == 5 * 3 * 1024 + 20
    # Nothing more to do the second time.
    assert run_retention(data, farm, policy)["freed_bytes"] == 0


def test_a_run_holds_the_budget_on_disk(tmp_path):
    farm = every_kind_of_job()
    data = make_data_dir(tmp_path / "data", farm, age=DAY)
    # Finished jobs' folders get different ages: cancelled older than collected.
    for kind, age in ((WORK, 5), (LOGS, 4), (FRAMES, 3)):
        stamp = NOW - age * DAY
        for top, dirs, files in os.walk(data.job_dir(kind, "cancelled")):
            for name in [*dirs, *files, "."]:
                os.utime(os.path.join(top, name), (stamp, stamp))
    total = sum(i.size for i in list_items(data))
    budget = total - 2 * 1024
    rep = run_retention(data, farm, Policy(grace=DAY * 30, budget=budget))
    assert [d["name"] for d in rep["deleted"]] == ["cancelled", "cancelled"]
    assert [d["kind"] for d in rep["deleted"]] == [WORK, LOGS]  # the oldest two
    assert sum(i.size for i in list_items(data)) <= budget
    assert rep["over_budget_bytes"] == 0


def test_a_job_that_became_live_since_the_plan_keeps_its_folders(tmp_path):
    """The farm moves on while a run deletes: each item is looked at again with the
    newest state just before it goes (here: a job this node did not know yet)."""
    farm = every_kind_of_job()
    data = make_data_dir(tmp_path / "data", farm, age=30 * DAY)
    stray = data.job_dir(WORK, "late-job")
    stray.mkdir(parents=True)
    (stray / "scene.pov").write_text("x")
    os.utime(stray / "scene.pov", (NOW - 30 * DAY,) * 2)
    os.utime(stray, (NOW - 30 * DAY,) * 2)
    policy = Policy(max_age=7 * DAY)
    p = plan(farm.state, list_items(data), policy, NOW, {})
    assert (WORK, "late-job") in deleted(p)
    farm.job("late-job")  # its NEW_JOB arrives meanwhile
    from peerfarm.runtime.retention import StillUnneeded

    outcome = delete_planned(data, p.delete, StillUnneeded(lambda: farm.state, data))
    assert stray.exists() and outcome.skipped == 1


def test_a_blob_used_since_the_plan_stays(tmp_path):
    """A blob a client asked about (HAVE_BLOBS) before its SUBMIT is renewed: a run
    planned before that does not delete it."""
    from peerfarm.runtime.blobs import BlobStore
    from peerfarm.runtime.retention import StillUnneeded

    farm = every_kind_of_job()
    data = make_data_dir(tmp_path / "data", farm, age=30 * DAY)
    p = plan(farm.state, list_items(data), Policy(max_age=7 * DAY), NOW, {})
    assert (BLOBS, f"33/{SHA_LOOSE}") in deleted(p)
    assert BlobStore(data.blobs).held(SHA_LOOSE) == (True, 10)  # a client asks
    delete_planned(data, p.delete, StillUnneeded(lambda: farm.state, data))
    assert (data.blobs / "33" / SHA_LOOSE).exists()


def test_a_file_held_open_is_not_fatal(tmp_path):
    """Deleting a file held open: on Windows it fails and is reported; elsewhere it goes.
    Either way the run finishes and deletes everything else."""
    farm = every_kind_of_job()
    data = make_data_dir(tmp_path / "data", farm, age=30 * DAY)
    held = data.job_dir(WORK, "cancelled") / "a.bin"
    with open(held, "rb"):
        rep = run_retention(data, farm, Policy(grace=0, max_age=7 * DAY))
    assert rep["freed"]["logs"]["count"] == 2
    if os.name == "nt":
        assert any("a.bin" in e for e in rep["errors"])
    else:
        assert not held.exists() and rep["errors"] == []


def _python_for(uid: int) -> tuple[str, str]:
    """A Python that user ``uid`` may run with this peerfarm (as test_doctor finds it)."""
    from test_doctor import _python_for as python_for

    return python_for(uid)


GC_AS_OTHER_USER = """
import json, sys, trio
sys.path.insert(0, {tests!r})
from test_retention import every_kind_of_job, NOW
from peerfarm.core.retention import Policy
from peerfarm.runtime.data_dir import DataDir
from peerfarm.runtime.retention import Retention
farm = every_kind_of_job()
r = Retention(DataDir({root!r}), Policy(grace=0, max_age=7 * 86400), lambda: farm.state,
              clock=lambda: NOW)
print(json.dumps(trio.run(r.run)))
"""


def test_permission_denied_is_reported_and_the_run_goes_on(tmp_path):
    """One job's work folder may not be changed by the user running the node (a folder
    copied in as root): that folder is reported, every other one is deleted."""
    if os.name == "posix" and os.geteuid() == 0:
        # As root, run retention as `nobody` on a data folder it owns, but for one
        # folder that stays root's (outside pytest's folders, which only root may enter).
        with tempfile.TemporaryDirectory(prefix="peerfarm-retention-") as place:
            rep, data = _as_nobody(Path(place))
    else:
        farm = every_kind_of_job()
        data = make_data_dir(tmp_path / "data", farm, age=30 * DAY)
        locked = data.job_dir(WORK, "cancelled")
        locked.chmod(0o555)
        (locked / "sub").chmod(0o555)
        try:
            rep = run_retention(data, farm, Policy(grace=0, max_age=7 * DAY))
        finally:
            locked.chmod(0o755)
            (locked / "sub").chmod(0o755)
        _check_locked(rep, data)


def _as_nobody(place: Path) -> tuple[dict, DataDir]:
    python, python_path = _python_for(65534)
    place.chmod(0o755)
    root = place / "data"
    data = make_data_dir(root, every_kind_of_job(), age=30 * DAY)
    locked = data.job_dir(WORK, "cancelled")
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files, "."]:
            where = os.path.join(top, name)
            if not where.startswith(str(locked)):
                os.chown(where, 65534, 65534, follow_symlinks=False)
    script = GC_AS_OTHER_USER.format(tests=str(Path(__file__).parent), root=str(root))
    done = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": python_path, "HOME": str(place)},
        user=65534,
        group=65534,
        cwd=str(place),
    )
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    _check_locked(rep, data)
    return rep, data


def _check_locked(rep: dict, data: DataDir) -> None:
    assert rep["errors"], rep
    assert all("Permission denied" in e and "cancelled" in e for e in rep["errors"])
    assert (data.job_dir(WORK, "cancelled") / "a.bin").exists()
    assert rep["freed"]["logs"]["count"] == 2  # the rest went
    assert rep["freed"]["work"]["count"] == 1  # "collected"'s work; "cancelled"'s failed
    assert not data.job_dir(WORK, "collected").exists()
