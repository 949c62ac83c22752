"""Per-shard checkpoints: the processor's commit, and why every record is archived exactly once.

Standard library only. Kinesis and Lambda deliver at least once, and a redelivery need not have
the first delivery's boundaries: a timeout (writes done, answer lost), a crash, a bisected retry,
a partial-batch retry or a re-created mapping reading from ``TRIM_HORIZON`` all re-send records
in other batches. Naming an object after the first record of *its batch* is therefore not
enough: the same record lands in two objects whose batches started at different records.

The rule that holds: **each shard has a committed high-water mark, stored beside the data**
(``checkpoints/<shard>.json`` in the raw bucket, :func:`helpers.core.layout.checkpoint_key`),
written last, after every raw object, item and manifest of the batch. Then:

1. A record at or below the mark was committed by an earlier invocation: it is skipped (no raw
   line, no item write, no manifest entry). That settles every redelivery of committed records,
   whatever its boundaries.
2. Every object of a batch is named after the *first record above the mark* of its group
   (shard, symbol, day). Records are immutable and the mark only moves at a commit, so every
   attempt between two commits names a group's object after the same record and overwrites what
   an earlier, uncommitted attempt (a crash, a timeout, a failure) wrote there. When the mark
   moves past a record, the object that holds it was written by the committing attempt, and
   records above the new mark are cut out of it before the commit (the partial-failure trim).
   So a record's line exists in exactly one object once it is committed, and in none that
   survives otherwise.
3. The mark compares sequence numbers as integers *and* arrival times: a stream deleted and
   created again under the same name restarts moto's short sequence numbers, and its records
   arrive after the mark's record did, so they are new (on AWS, sequence numbers keep growing).

What cannot be written is **parked**, so the shard moves on: a record whose writes failed
:data:`PARK_AFTER` times (counted in the checkpoint, since Lambda does not tell a Kinesis
consumer how often it retried) or failed with an error no retry can fix (:data:`PERMANENT_ERRORS`)
is written with its bytes to ``parked/<shard>/<first record>.ndjson`` instead of the archive and
the table: no raw line, no item, listed as parked in the manifest, redriven by
:mod:`helpers.notebook.failures`. :data:`PARK_AFTER` stays below the mapping's
``MaximumRetryAttempts`` (3), so the processor parks a record before Lambda would give up on the
whole rest of its batch.

**After a give-up.** Lambda stops retrying a batch after ``MaximumRetryAttempts`` (timeouts,
crashes) and moves on; the records it skipped go to the on-failure destination, to be redriven
as new records. What an attempt wrote for them must then go, or the stores disagree. So before
its first write an attempt records its intent in the checkpoint (:class:`Pending`: the first
record above the mark, the objects it may write, the items with their records), and a commit
leaves the items written above its cutoff there. The next invocation compares: a batch that
starts at the pending first record is a retry and overwrites everything; one that starts later
follows a give-up, and :meth:`Pending.given_up` names what to delete -- the objects and the
items (only if still written by one of those attempts: their ``processed_at``) of the skipped
records. Attempts at the same first record accumulate in one :class:`Pending` (:meth:`merged`).

Concurrency: Lambda runs one invocation per shard at a time (``ParallelizationFactor`` 1), and
a timed-out invocation is stopped before its retry starts, so a shard's checkpoint has one
writer at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

__all__ = [
    "PARKED_REASON",
    "PARK_AFTER",
    "PERMANENT_ERRORS",
    "Checkpoint",
    "Failure",
    "Pending",
    "Position",
    "parked_line",
]

PARK_AFTER = 3
"""Failed attempts after which a record is parked (below the mappings' MaximumRetryAttempts)."""
PERMANENT_ERRORS = frozenset(
    {
        "AccessDenied",  # S3: a bucket policy or a missing permission on one prefix
        "AccessDeniedException",  # DynamoDB
        "AllAccessDisabled",
        "InvalidObjectState",
        "KMS.DisabledException",
        "KMS.KMSInvalidStateException",
        "ValidationException",  # DynamoDB refuses this item (size, a key attribute)
    }
)
"""Error codes no retry can fix: the records concerned are parked at once."""
PARKED_REASON = "write_failed"
MAX_PENDING_STAMPS = 50  # processed_at values kept for the attempts at one first record (DynamoDB IN: 100)


class Position(Protocol):
    """What a checkpoint needs of a record: its sequence number, as text and as an int, and arrival."""

    @property
    def seq(self) -> str: ...

    @property
    def order(self) -> int: ...

    @property
    def arrival_epoch(self) -> float: ...


@dataclass(frozen=True)
class Failure:
    """A record above the mark whose writes failed: how many times, and the last error."""

    attempts: int
    error: str


@dataclass(frozen=True)
class Pending:
    """What an uncommitted attempt may have left: from record ``first`` on, these objects and items."""

    first: str  # sequence number of the first record not committed
    processed_at: tuple[str, ...]  # the attempts' processed_at: an item carrying one is theirs
    objects: tuple[tuple[str, str], ...] = ()  # (key, sequence number of the record it is named after)
    items: tuple[tuple[str, str, str], ...] = ()  # (sequence number, symbol, timestamp)

    def given_up(self, resumed_at: int | None) -> Pending | None:
        """What to delete when the shard resumed at record ``resumed_at`` (its first above the mark).

        None when the batch retries the pending records (it starts at ``first``) or has no record
        above the mark (a redelivery of committed records says nothing about a give-up).
        """
        first = int(self.first) if self.first.isdigit() else -1
        if resumed_at is None or resumed_at <= first:  # nothing new, or a retry of these records
            return None

        def below(seq: str) -> bool:
            return seq.isdigit() and int(seq) < resumed_at

        return Pending(
            self.first,
            self.processed_at,
            tuple(o for o in self.objects if below(o[1])),
            tuple(i for i in self.items if below(i[0])),
        )

    def merged(self, earlier: Pending | None) -> Pending:
        """This intent plus what an earlier attempt at the same first record may have left."""
        if earlier is None or earlier.first != self.first:
            return self
        stamps = tuple(dict.fromkeys(earlier.processed_at + self.processed_at))[-MAX_PENDING_STAMPS:]
        objects = tuple(dict.fromkeys(earlier.objects + self.objects))
        items = tuple(dict.fromkeys(earlier.items + self.items))
        return Pending(self.first, stamps, objects, items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "processed_at": list(self.processed_at),
            "objects": [list(o) for o in self.objects],
            "items": [list(i) for i in self.items],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pending:
        return cls(
            str(data["first"]),
            tuple(str(p) for p in data["processed_at"]),
            tuple((str(k), str(a)) for k, a in data.get("objects", [])),
            tuple((str(q), str(s), str(t)) for q, s, t in data.get("items", [])),
        )


@dataclass(frozen=True)
class Checkpoint:
    """A shard's committed high-water mark and the records above it that keep failing."""

    shard: str
    sequence_number: str = ""  # the last committed record; "" when none yet
    order: int = -1
    arrival: float = 0.0  # its approximateArrivalTimestamp, epoch seconds
    failing: dict[str, Failure] = field(default_factory=dict)
    pending: Pending | None = None  # what the last attempt may have left above the mark

    def done(self, r: Position) -> bool:
        """True if ``r`` was committed by an earlier invocation (see rule 3 of the module docstring)."""
        return 0 <= r.order <= self.order and r.arrival_epoch <= self.arrival

    def attempts(self, seq: str) -> int:
        failure = self.failing.get(seq)
        return failure.attempts if failure else 0

    def intending(self, pending: Pending) -> Checkpoint:
        """This checkpoint with an attempt's intent recorded (written before its first write)."""
        return replace(self, pending=pending)

    def advance(
        self, committed: Iterable[Position], errors: Mapping[str, str], pending: Pending | None = None
    ) -> Checkpoint:
        """The checkpoint after this batch: the mark at its last committed record, failures counted.

        ``committed`` in sequence order; ``errors`` maps the sequence numbers of records that
        failed in this batch (not merely held behind a failure) to the error; ``pending``: what
        stays written above the cutoff (items), for the next invocation to judge.
        """
        rows = list(committed)
        last = rows[-1] if rows else None
        seq, order, arrival = (
            (self.sequence_number, self.order, self.arrival)
            if last is None
            else (last.seq, last.order, last.arrival_epoch)
        )
        failing = {
            s: f for s, f in self.failing.items() if not (s.isdigit() and int(s) <= order) and s not in errors
        }
        for s, error in errors.items():
            failing[s] = Failure(self.attempts(s) + 1, error[:500])
        return Checkpoint(self.shard, seq, order, arrival, failing, pending)

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "shard": self.shard,
            "sequence_number": self.sequence_number,
            "arrival": self.arrival,
            "failing": {s: {"attempts": f.attempts, "error": f.error} for s, f in self.failing.items()},
        }
        if self.pending is not None:
            data["pending"] = self.pending.to_dict()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes, shard: str) -> Checkpoint:
        """Parse a stored checkpoint; ``ValueError`` if it is not one (never guess a mark)."""
        try:
            data: dict[str, Any] = json.loads(body)
            seq = str(data["sequence_number"])
            failing = {
                str(s): Failure(int(f["attempts"]), str(f["error"]))
                for s, f in data.get("failing", {}).items()
            }
            pending = Pending.from_dict(data["pending"]) if data.get("pending") else None
            return cls(shard, seq, int(seq) if seq else -1, float(data["arrival"]), failing, pending)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"checkpoint of {shard} is not valid JSON of a checkpoint: {err}") from err


def parked_line(
    *, seq: str, partition_key: str, shard: str, data: bytes, arrival: str, detail: str, attempts: int
) -> bytes:
    """One parked record as NDJSON: why, how often it was tried, where it came from, its bytes."""
    import base64

    return json.dumps(
        {
            "reason": PARKED_REASON,
            "detail": detail,
            "sequence_number": seq,
            "partition_key": partition_key,
            "shard": shard,
            "data_base64": base64.b64encode(data).decode("ascii"),
            "arrival": arrival,
            "attempts": attempts,
        },
        separators=(",", ":"),
    ).encode("utf-8")
