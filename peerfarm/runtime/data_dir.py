"""Where a node keeps things: the layout of its data folder, in one place.

::

    DATA_DIR/node.key, node.crt   identity (peerfarm.security.identity)
    DATA_DIR/node.json            node id and name
    DATA_DIR/node.lock            held while a node runs here (runtime/folder_lock.py)
    DATA_DIR/kwl.json             known-worker list
    DATA_DIR/log.bin              the action log after the snapshot (runtime/store.py)
    DATA_DIR/snapshot.bin         the log's compacted base (core/snapshot.py), if any
    DATA_DIR/log.protocol2.bin    a log written before signed feeds, set aside
    DATA_DIR/blobs/               content-addressed scene files (runtime/blobs.py)
    DATA_DIR/work/JOB/            a job's scene, unpacked, where its renderer runs
    DATA_DIR/frames/JOB/          frames (and tiles) this node rendered, or pulled to stitch
    DATA_DIR/logs/JOB/chunk-N.log renderer output of this node's runs of chunk N
"""

from __future__ import annotations

from pathlib import Path

from peerfarm.core.state import Job

LEGACY_LOG_NAME = "log.protocol2.bin"
DAMAGED_SNAPSHOT_NAME = "snapshot.damaged.bin"  # a snapshot that could not be read


class DataDir:
    def __init__(self, root: Path) -> None:
        # Resolved once: renderers run in the job's work folder, where a relative
        # path would mean something else.
        self.root = Path(root).expanduser().resolve()

    @property
    def log_file(self) -> Path:
        return self.root / "log.bin"

    @property
    def snapshot_file(self) -> Path:
        return self.root / "snapshot.bin"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def work_dir(self, job_id: str) -> Path:
        return self.root / "work" / job_id

    def frames_dir(self, job_id: str) -> Path:
        return self.root / "frames" / job_id

    def frame_path(self, job: Job, frame: int, tile: int | None = None) -> Path:
        """Where this node keeps a frame (or one tile of a frame) it rendered; the
        submitter also keeps the tiles it pulled here until it stitches the frame."""
        name = job.frame_file_name(frame) if tile is None else job.tile_file_name(frame, tile)
        return self.frames_dir(job.id) / name

    def logs_dir(self, job_id: str) -> Path:
        return self.root / "logs" / job_id

    def chunk_log_path(self, job_id: str, chunk: int) -> Path:
        """Where this node keeps the renderer output of its runs of one chunk."""
        return self.logs_dir(job_id) / f"chunk-{chunk}.log"

    def job_dir(self, kind: str, job_id: str) -> Path:
        """A job's folder of one kind: "frames", "work" or "logs" (core/retention.py)."""
        return {"frames": self.frames_dir, "work": self.work_dir, "logs": self.logs_dir}[kind](
            job_id
        )
