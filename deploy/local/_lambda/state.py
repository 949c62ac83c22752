"""The runtime's own state: per-shard checkpoints and counters, per-mapping notes.

Kept apart from the polling loop so a shard poller can stop and restart (mapping disabled and
enabled again, stack busy) without losing its place, and so health reports read one structure.
The stack's persistence (:mod:`deploy.local.persist`) saves this whole object with moto's state,
so a restarted stack carries on from the same checkpoints.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ShardState:
    """Where a mapping is in one shard, and what it did there."""

    checkpoint: int  # last sequence number done with (processed or sent on failure)
    last_poll: float = 0.0
    invocations: int = 0
    batches_ok: int = 0
    records_ok: int = 0
    records_filtered: int = 0  # dropped by the mapping's FilterCriteria (never delivered)
    function_errors: int = 0
    partial_failures: int = 0
    retries: int = 0
    bisections: int = 0
    records_discarded: int = 0
    on_failure_sent: int = 0
    iterator_age_ms: int = 0
    last_batch_size: int = 0
    last_latency_ms: float | None = None  # newest record's arrival -> invocation start
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_poll"] = round(self.last_poll, 3) if self.last_poll else None
        return data


@dataclass
class MappingNote:
    function_arn: str
    source_arn: str
    state: str = "Enabled"
    problem: str | None = None
    created_at: float = field(default_factory=time.time)


class RuntimeState:
    """Checkpoints and counters of every (mapping, shard), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: dict[tuple[str, str], ShardState] = {}
        self._mappings: dict[str, MappingNote] = {}
        self._created_positions: dict[str, dict[str, int]] = {}

    # --- positions at creation (StartingPosition LATEST) --------------------------------
    def remember_created(self, uuid: str, positions: dict[str, int]) -> None:
        with self._lock:
            self._created_positions[uuid] = dict(positions)

    def created_position(self, uuid: str, shard_id: str) -> tuple[bool, int | None]:
        """(whether positions were recorded at creation, the shard's position then)."""
        with self._lock:
            positions = self._created_positions.get(uuid)
            return positions is not None, (positions or {}).get(shard_id)

    # --- shards ---------------------------------------------------------------------------
    def shard(self, uuid: str, shard_id: str, initial: int) -> ShardState:
        with self._lock:
            return self._shards.setdefault((uuid, shard_id), ShardState(checkpoint=initial))

    def has_shard(self, uuid: str, shard_id: str) -> bool:
        with self._lock:
            return (uuid, shard_id) in self._shards

    # --- mappings -------------------------------------------------------------------------
    def note(
        self, uuid: str, function_arn: str, source_arn: str, state: str, problem: str | None = None
    ) -> None:
        with self._lock:
            note = self._mappings.setdefault(uuid, MappingNote(function_arn, source_arn))
            note.function_arn, note.source_arn, note.state, note.problem = (
                function_arn,
                source_arn,
                state,
                problem,
            )

    def forget(self, uuid: str) -> None:
        """A deleted mapping: drop its checkpoints (a new mapping starts from its own position)."""
        with self._lock:
            self._mappings.pop(uuid, None)
            self._created_positions.pop(uuid, None)
            for key in [k for k in self._shards if k[0] == uuid]:
                del self._shards[key]

    def version(self) -> tuple[Any, ...]:
        """What persistence must save again when it changes: checkpoints and mapping states."""
        with self._lock:
            return (
                tuple(sorted((k, s.checkpoint) for k, s in self._shards.items())),
                tuple(sorted((u, n.state) for u, n in self._mappings.items())),
                tuple(sorted(self._created_positions)),
            )

    def known(self) -> set[str]:
        with self._lock:
            return set(self._mappings)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for uuid, note in self._mappings.items():
                shards = {sid: s.to_dict() for (u, sid), s in self._shards.items() if u == uuid}
                out[uuid] = {
                    "function_arn": note.function_arn,
                    "source_arn": note.source_arn,
                    "state": note.state,
                    "problem": note.problem,
                    "records_ok": sum(s["records_ok"] for s in shards.values()),
                    "records_filtered": sum(s["records_filtered"] for s in shards.values()),
                    "invocations": sum(s["invocations"] for s in shards.values()),
                    "function_errors": sum(s["function_errors"] for s in shards.values()),
                    "records_discarded": sum(s["records_discarded"] for s in shards.values()),
                    "shards": shards,
                }
            return out
