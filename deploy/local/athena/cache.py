"""The engine's scan cache: each NDJSON object is parsed once, into Parquet, until its ETag changes.

A JSON table's objects are read with DuckDB's ``read_json`` under the table's column types; the
rows are written to a Parquet **segment** with the object they came from (its ``bucket/key``) in
``_stp_file``. A later query over the same objects reads the segments instead (``read_parquet``
of a few files, not thousands of small JSON ones) and converts only the objects no segment holds
with their current ETag. Notebook 05 runs six queries over the same archive: the first pays the
parsing, the others do not.

Correctness: a segment is used only while every object in it still has the ETag it was parsed
from; one rewritten object (a processor trim, a new upload under the same key) drops the whole
segment, and its still-wanted objects are parsed again. Objects a query does not want (pruned
partitions, deleted objects) may sit in a used segment: the engine joins the rows with the
query's own object list, so they are never read. Segments are keyed by the table's format,
column types and SerDe options: a changed schema never reuses rows parsed under another.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.athena.tables import S3Object

__all__ = ["MAX_SEGMENTS", "ScanCache", "Segment"]

log = logging.getLogger(__name__)

MAX_SEGMENTS = 64  # per schema; past it the next conversion starts the schema over in one segment
RETIRE_SECONDS = 300.0  # a dropped segment's file is deleted this long after (queries may read it)


@dataclass
class Segment:
    path: Path
    objects: dict[str, str] = field(default_factory=dict)  # bucket/key -> ETag parsed from
    rows: int = 0


class ScanCache:
    """Parquet segments under ``root``, by schema key; safe to share between the engine's threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.parquet"):  # a previous run's segments: ETags unknown now
            stale.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._segments: dict[tuple[object, ...], list[Segment]] = {}
        self._retired: list[tuple[float, Path]] = []
        self.hits = 0  # objects served from segments
        self.misses = 0  # objects parsed

    def plan(
        self, schema: tuple[object, ...], objects: Sequence[S3Object]
    ) -> tuple[list[Path], list[S3Object]]:
        """The segments to read for ``objects`` and the objects none of them holds (to convert)."""
        current = {o.path: o.etag for o in objects if o.etag}
        with self._lock:
            kept, covered = [], set()
            for segment in self._segments.get(schema, []):
                if any(path in current and current[path] != etag for path, etag in segment.objects.items()):
                    self._retire(segment.path)  # an object changed: its rows are stale
                    continue
                kept.append(segment)
                covered.update(path for path in segment.objects if path in current)
            self._segments[schema] = kept
            missing = [o for o in objects if o.path not in covered]
            self.hits += len(covered)
            self.misses += len(missing)
        used = [s.path for s in kept if any(path in covered for path in s.objects)]
        return used, missing

    def _retire(self, path: Path) -> None:
        """Delete a dropped segment once no query started before now can still be opening it."""
        now = time.monotonic()
        self._retired.append((now, path))
        while self._retired and now - self._retired[0][0] > RETIRE_SECONDS:
            self._retired.pop(0)[1].unlink(missing_ok=True)

    def new_path(self) -> Path:
        return self.root / f"{uuid.uuid4().hex}.parquet"

    def add(self, schema: tuple[object, ...], path: Path, objects: Sequence[S3Object], rows: int) -> None:
        """Remember a segment written at ``path`` from ``objects`` (those without an ETag are not kept)."""
        if any(not o.etag for o in objects):
            path.unlink(missing_ok=True)
            return
        with self._lock:
            segments = self._segments.setdefault(schema, [])
            if len(segments) >= MAX_SEGMENTS:
                log.info("scan cache: %d segments for one schema; starting it over", len(segments))
                for old in segments:
                    self._retire(old.path)
                segments.clear()
            segments.append(Segment(path, {o.path: o.etag for o in objects}, rows))

    def stats(self) -> dict[str, int]:
        with self._lock:
            segments = [s for group in self._segments.values() for s in group]
        return {
            "segments": len(segments),
            "objects": sum(len(s.objects) for s in segments),
            "rows": sum(s.rows for s in segments),
            "bytes": sum(s.path.stat().st_size for s in segments if s.path.exists()),
            "hits": self.hits,
            "misses": self.misses,
        }
