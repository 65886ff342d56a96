"""Background jobs (ingest of a server-side folder, clustering): run in a thread of the worker that
accepted them, their state written as one small JSON file per job so that every worker of the
server can answer `GET /v1/jobs/{id}`.

One job writes at a time in a server (the gallery has one writer); a second one waits its turn in
the queue. A job that fails keeps its error message (the same sentence the CLI would print).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gallery.fsutil import atomic_write
from gallery.progress import Progress

log = logging.getLogger(__name__)

Work = Callable[[Callable[[Progress], None]], Any]  # -> a pydantic answer (or a JSON-able dict)


class Jobs:
    """The jobs of one server, in `folder` (shared by its workers)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._queue_lock = threading.Lock()  # one writing job at a time in this worker
        self._seq = itertools.count(1)
        self._ended: dict[str, threading.Event] = {}  # this worker's jobs: set when they end

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _write(self, record: dict[str, Any]) -> None:
        atomic_write(self._path(record["job"]), json.dumps(record).encode())

    def get(self, job_id: str) -> dict[str, Any] | None:
        if not job_id.replace("-", "").isalnum():
            return None
        try:
            return json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            return None

    def list(self) -> list[dict[str, Any]]:
        records = []
        for p in self.folder.glob("*.json"):
            try:
                records.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being replaced right now
                continue
        return sorted(records, key=lambda r: r["created_at"], reverse=True)

    def running(self) -> list[dict[str, Any]]:
        return [r for r in self.list() if r["state"] in ("queued", "running")]

    def start(self, kind: str, params: dict[str, Any], work: Work) -> dict[str, Any]:
        """Queue `work` in a thread; returns the job's first record (state `queued`)."""
        job_id = f"{kind}-{os.getpid()}-{next(self._seq)}-{uuid.uuid4().hex[:8]}"
        record: dict[str, Any] = {"job": job_id, "kind": kind, "state": "queued", "params": params,
                                  "created_at": time.time(), "started_at": None, "finished_at": None,
                                  "progress": None, "result": None, "error": None}
        self._write(record)
        self._ended[job_id] = threading.Event()
        threading.Thread(target=self._run, args=(record, work), name=f"job {job_id}", daemon=True).start()
        return record

    def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's record once it ended (done or failed), or None if it is still queued or running
        after `timeout` seconds (a job of this worker)."""
        ended = self._ended.get(job_id)
        if ended is None or not ended.wait(max(0.0, timeout)):
            return None
        self._ended.pop(job_id, None)
        return self.get(job_id)

    def _run(self, record: dict[str, Any], work: Work) -> None:
        last = 0.0

        def on_progress(event: Progress) -> None:
            nonlocal last
            record["progress"] = event.as_dict()  # stage, done, total, message, rate, eta_seconds
            now = time.monotonic()
            if now - last >= 0.5:  # a file write per half second at most
                last = now
                self._write(record)

        with self._queue_lock:
            record.update(state="running", started_at=time.time())
            self._write(record)
            try:
                result = work(on_progress)  # a typed answer (gallery.app.answers), kept as its JSON
                record["result"] = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
                record["state"] = "done"
            except Exception as exc:  # noqa: BLE001 - a job's failure is its record, never a dead thread
                from gallery.server.service import api_error_of

                known = api_error_of(exc)
                record["state"] = "failed"
                record["error"] = {"status": known.status, **known.body()} if known else {
                    "status": 500, "error": "internal", "detail": "An unexpected error: it is logged on the server."}
                if known is None:
                    log.exception("job %s failed", record["job"])
            record["finished_at"] = time.time()
            self._write(record)
            self._ended.get(record["job"], threading.Event()).set()
