"""Persistence of the local stack under ``<state_dir>/persist/``: state that survives ``down``/``up``
and a crash.

What is kept: every moto service in use (streams with their records and sequence numbers, tables
with their items and stream records, buckets and objects, queues and their messages, topics and
subscriptions, functions with their code, event source mappings, the Glue catalog, roles, log
groups and their events), the Lambda runtime's per-shard checkpoints and the Athena endpoint's
workgroups and query history.

How:

* A **snapshot** is a consistent cut of all of it. Requests that change state pass through a
  :class:`Gate`; a snapshot closes the gate until the requests in flight have finished, forks, and
  opens it again, so serving pauses only for the fork. The child process (a copy-on-write image
  of that instant) pickles the services that changed since the last snapshot, then swaps the
  manifest in with one ``os.replace``: a snapshot is either complete or absent.
* Between snapshots, every Kinesis record accepted is appended to a **journal** before its
  producer gets the answer. Recovery loads the newest complete snapshot, then replays the
  journals written after its cut, so an acknowledged record is never lost to a crash of the stack
  (the file is in the OS's page cache the moment ``write`` returns; only a crash of the machine
  itself could lose it).
* Snapshots run every ``snapshot_seconds`` while anything changes (and never closer than twice
  the last one's duration, so they cannot take more than a third of a core), and once more at a
  graceful stop.

What a crash (SIGKILL, OOM) loses: changes other than Kinesis records made after the last
snapshot's cut, at most ``snapshot_seconds`` plus one snapshot's duration (reported in the health
as ``crash_window_seconds``). The stores agree after recovery: they, the mapping checkpoints and
the stream all come from the same cut, so the pipeline reprocesses from its checkpoints exactly
the records whose results were lost, and the processor's idempotent writes make that exact.
Control-plane changes in that window (a table created a second before the crash) are gone too:
provisioning is idempotent, run it again.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import ctypes
import gc
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "Gate",
    "Persistence",
    "changes_state",
    "changing",
    "reset",
    "saved_state",
]

FORMAT = 1
DIR_NAME = "persist"
MANIFEST = "manifest.json"
SNAPSHOT_SECONDS = 2.0
CUT_TIMEOUT_SECONDS = 1.0  # a cut that cannot drain the requests in flight this fast is retried later
PICKLE_PROTOCOL = 5
# A request signed for one service can change another's state (SNS delivers to SQS).
FANS_OUT = {"sns": ("sns", "sqs"), "monitoring": ("cloudwatch",), "dynamodb": ("dynamodb", "dynamodbstreams")}
ALL = "*"
READ_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "Head")


# --------------------------------------------------------------------------- pickling support


def _lock_type() -> type:
    return type(threading.Lock())


def _rlock_type() -> type:
    return type(threading.RLock())


def _weak_values(items: dict[Any, Any]) -> weakref.WeakValueDictionary[Any, Any]:
    return weakref.WeakValueDictionary(items)


def _private_key(der: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    return load_der_private_key(der, password=None)


def _reduce_private_key(key: Any) -> tuple[Callable[..., Any], tuple[bytes]]:
    from cryptography.hazmat.primitives import serialization as s

    return _private_key, (key.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption()),)


def _reduce_defaultdict(d: collections.defaultdict[Any, Any]) -> tuple[Any, ...]:
    """moto builds some with ``defaultdict(lambda: {})``: a lambda's product type stands in for it."""
    factory = d.default_factory
    if factory is not None and "<" in getattr(factory, "__qualname__", "<"):
        sample = factory()
        if type(sample)() != sample:
            raise pickle.PicklingError(f"defaultdict factory {factory!r} cannot be saved")
        factory = type(sample)
    return collections.defaultdict, (factory,), None, None, iter(d.items())


def _limited_size_dict(items: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    rebuilt = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(rebuilt, items)  # its __setitem__ re-sizes the whole dict per key: O(n^2) to load
    return rebuilt


def _install_reducers() -> None:
    """Locks come back new and unlocked; weak dictionaries with their (strongly held) values;
    ``defaultdict`` with a lambda factory; KMS keys as DER bytes."""
    copyreg.pickle(collections.defaultdict, _reduce_defaultdict)  # type: ignore[arg-type]
    with contextlib.suppress(ImportError):
        from moto.dynamodb.models.dynamo_type import LimitedSizeDict

        copyreg.pickle(LimitedSizeDict, lambda d: (_limited_size_dict, (dict(d),)))
    copyreg.pickle(_lock_type(), lambda _lock: (threading.Lock, ()))
    copyreg.pickle(_rlock_type(), lambda _lock: (threading.RLock, ()))
    copyreg.pickle(weakref.WeakValueDictionary, lambda d: (_weak_values, (dict(d.items()),)))
    with contextlib.suppress(ImportError):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        for key in (rsa_key, ec_key):
            copyreg.pickle(type(key), _reduce_private_key)


# --------------------------------------------------------------------------- the gate


class Gate:
    """Requests that change state hold it shared; a snapshot's cut holds it alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop new requests and wait for those in flight; False (and open again) after ``timeout``."""
        with self._cond:
            self._closed = True
            if self._cond.wait_for(lambda: not self._active, timeout):
                return True
            self._closed = False
            self._cond.notify_all()
            return False

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


_current: Persistence | None = None


@contextlib.contextmanager
def changing(*services: str) -> Iterator[None]:
    """A change to ``services`` made in the stack process itself (not through a request)."""
    current = _current
    if current is None:
        yield
        return
    with current.gate.request():
        current.mark(*services)
        yield


# --------------------------------------------------------------------------- the journal

_journal_lock = threading.Lock()
_journal_originals: dict[str, Any] = {}


def _install_journal() -> None:
    """Every Kinesis record moto accepts goes to the active journal (if any) before the answer."""
    from moto.kinesis.models import KinesisBackend

    with _journal_lock:
        if _journal_originals:
            return
        put_records, put_record = KinesisBackend.put_records, KinesisBackend.put_record
        _journal_originals.update(put_records=put_records, put_record=put_record)

    def journaled_put_records(
        self: Any, stream_arn: str, stream_name: str, records: list[dict[str, Any]]
    ) -> Any:
        answer = put_records(self, stream_arn, stream_name, records)
        current = _current
        if current is not None:
            accepted = [
                [r.get("PartitionKey"), r.get("ExplicitHashKey"), r.get("Data")]
                for r, a in zip(records, answer["Records"], strict=True)
                if "ErrorCode" not in a
            ]
            current.journal(self.account_id, self.region_name, stream_arn, stream_name, accepted)
        return answer

    def journaled_put_record(
        self: Any, stream_arn: str, stream_name: str, partition_key: str, explicit_hash_key: str, data: str
    ) -> Any:
        answer = put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)
        current = _current
        if current is not None:
            current.journal(
                self.account_id,
                self.region_name,
                stream_arn,
                stream_name,
                [[partition_key, explicit_hash_key, data]],
            )
        return answer

    KinesisBackend.put_records = journaled_put_records  # type: ignore[method-assign]
    KinesisBackend.put_record = journaled_put_record  # type: ignore[method-assign]


def _replay(path: Path) -> int:
    """Put a journal's records again, in order, below the journal and the stack's own limits.

    moto's own Lambda hooks are held off meanwhile (they would run mapped functions in Docker);
    the runtime's pollers find the records when they start.
    """
    from deploy.local._lambda import moto_hooks

    hooks = (lambda _mapping: None, lambda _source: None)
    moto_hooks.install(*hooks)
    try:
        return _replay_entries(path)
    finally:
        moto_hooks.uninstall(*hooks)


def _replay_entries(path: Path) -> int:
    from moto.backends import get_backend

    put_records = _journal_originals["put_records"]
    kinesis = get_backend("kinesis")
    replayed = 0
    with path.open("rb") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # the torn last line of a crash: its call never got an answer
                log.warning("journal %s ends with a partial entry; ignored", path.name)
                break
            records = [{"PartitionKey": k, "ExplicitHashKey": h, "Data": d} for k, h, d in entry["records"]]
            backend = kinesis[entry["account"]][entry["region"]]
            for start in range(0, len(records), 500):
                put_records(backend, entry["stream_arn"], entry["stream_name"], records[start : start + 500])
            replayed += len(records)
    return replayed


# --------------------------------------------------------------------------- moto's services


def _moto_backends() -> dict[str, Any]:
    """Service name -> moto's BackendDict, for the services in use."""
    from moto.core.base_backend import BackendDict

    return {bd.service_name: bd for bd in list(BackendDict._instances) if len(bd)}


def _moto_backend(service: str) -> Any:
    from moto.backends import get_backend

    return get_backend(service)  # type: ignore[call-overload]


def _signed_service(environ: dict[str, Any]) -> str:
    """The service a request is signed for (``Credential=.../region/SERVICE/aws4_request``)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = auth.partition("Credential=")[2].partition(",")[0]
    if not scope:  # presigned URLs
        query = environ.get("QUERY_STRING", "")
        scope = query.partition("X-Amz-Credential=")[2].partition("&")[0].replace("%2F", "/")
    parts = scope.split("/")
    return parts[3] if len(parts) >= 5 else ALL


def _reads_only(environ: dict[str, Any]) -> bool:
    method = environ.get("REQUEST_METHOD", "GET")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rpartition(".")[2].startswith(READ_PREFIXES)
    if method in ("GET", "HEAD"):
        query = environ.get("QUERY_STRING", "")
        action = query.partition("Action=")[2].partition("&")[0]
        return not action or action.startswith(READ_PREFIXES)
    return False


def changes_state(environ: dict[str, Any]) -> bool:
    """Whether a request to moto may change state (and so passes the gate).

    SQS's ReceiveMessage does not pass it: a long poll would hold every snapshot back.
    """
    if environ.get("HTTP_X_AMZ_TARGET", "").endswith(".ReceiveMessage"):
        return False
    return not _reads_only(environ)


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the thread that forked it ends (no orphans)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- persistence


class Persistence:
    """Snapshots, journal and recovery of one stack's state folder."""

    def __init__(self, state_dir: str | Path, *, snapshot_seconds: float = SNAPSHOT_SECONDS) -> None:
        self.root = Path(state_dir) / DIR_NAME
        self.snapshot_seconds = snapshot_seconds
        self.gate = Gate()
        self.parts: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self._versions: dict[str, Callable[[], Any]] = {}
        self.manifest: dict[str, Any] = {"format": FORMAT, "generation": 0, "parts": {}, "journals": []}
        self.restored: dict[str, Any] = {}
        self.snapshots = 0
        self.failed_snapshots = 0
        self.last_duration = 0.0
        self.last_error: str | None = None
        self._dirty: set[str] = set()
        self._own_digests: dict[str, int] = {}  # what each part of the stack's own was when last written
        self._dirty_lock = threading.Lock()
        self._journal_fd: int | None = None
        self._journal_generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot_lock = threading.Lock()  # one snapshot at a time

    # --- registration -------------------------------------------------------------------
    def register(
        self,
        name: str,
        dump: Callable[[], Any],
        load: Callable[[Any], None],
        version: Callable[[], Any] | None = None,
    ) -> None:
        """A state of the stack's own (not moto's): ``dump`` gives a picklable value, ``load`` takes
        it; it is written again when ``version()`` (default: the pickled value) changes."""
        self.parts[name] = (dump, load)
        self._versions[name] = version or (lambda: pickle.dumps(dump(), protocol=PICKLE_PROTOCOL))

    def mark(self, *services: str) -> None:
        with self._dirty_lock:
            self._dirty.update(services)

    def mark_request(self, environ: dict[str, Any]) -> None:
        service = _signed_service(environ)
        self.mark(*FANS_OUT.get(service, (service,)))

    # --- recovery -----------------------------------------------------------------------
    def restore_moto(self) -> None:
        """Load the newest snapshot's moto services and replay the journals after its cut.

        Call before the server serves and before :meth:`restore_parts`.
        """
        _install_reducers()
        _install_journal()
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        manifest = self._read_manifest()
        loaded: list[str] = []
        if manifest is not None:
            self.manifest = manifest
            for name, file in manifest["parts"].items():
                if name.startswith("moto:"):
                    state = self._load_part(file)
                    backend = _moto_backend(name.removeprefix("moto:"))
                    backend.clear()
                    backend.update(state)
                    from moto.core.base_backend import BackendDict

                    if backend not in BackendDict._instances:
                        BackendDict._instances.append(backend)
                    loaded.append(name)
        journals = sorted(self.root.glob("journal-*.jsonl"), key=_generation_of)
        base = int(self.manifest["generation"])
        replayed = 0
        for journal in journals:
            if _generation_of(journal) >= base:
                replayed += _replay(journal)
        self._journal_generation = max([base, *(_generation_of(j) + 1 for j in journals)])
        self._open_journal()
        if replayed:
            self.mark("kinesis")
        self.restored = {
            "snapshot_generation": base if manifest else None,
            "snapshot_taken_at": manifest.get("taken_at") if manifest else None,
            "services": sorted(n.removeprefix("moto:") for n in loaded),
            "journal_records_replayed": replayed,
            "seconds": 0.0,
        }
        self.restored["seconds"] = round(time.monotonic() - started, 3)

    def restore_parts(self) -> None:
        """Give every registered part its saved value (after :meth:`register`, before serving)."""
        started = time.monotonic()
        for name, file in self.manifest["parts"].items():
            if name in self.parts:
                self.parts[name][1](self._load_part(file))
        self.restored["seconds"] = round(self.restored.get("seconds", 0.0) + time.monotonic() - started, 3)

    # --- running ------------------------------------------------------------------------
    def start(self) -> None:
        global _current
        _current = self
        self._thread = threading.Thread(target=self._loop, name="local-stack-snapshots", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """A last snapshot (in this process: nothing is served any more), then the journal closes."""
        global _current
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.snapshot(fork=False)
        finally:
            if _current is self:
                _current = None
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None

    def journal(
        self, account: str, region: str, stream_arn: str, stream_name: str, records: list[Any]
    ) -> None:
        if not records or self._journal_fd is None:
            return
        entry = {
            "account": account,
            "region": region,
            "stream_arn": stream_arn,
            "stream_name": stream_name,
            "records": records,
        }
        os.write(self._journal_fd, json.dumps(entry, separators=(",", ":")).encode() + b"\n")

    def _loop(self) -> None:
        while not self._stop.wait(max(self.snapshot_seconds, 2 * self.last_duration)):
            try:
                self.snapshot(fork=True)
            except Exception as err:  # keep serving; the next round tries again
                self.failed_snapshots += 1
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("snapshot failed")

    def snapshot(self, *, fork: bool = True, wait: bool = False) -> bool:
        """Write the changed parts of a consistent cut; True if a snapshot was written.

        ``wait``: retry a cut that could not drain the requests in flight (bounded, 30 s).
        """
        deadline = time.monotonic() + 30
        while True:
            written = self._snapshot(fork)
            if written is not None or not wait or time.monotonic() > deadline:
                return bool(written)

    def _snapshot(self, fork: bool) -> bool | None:
        """True: written; False: nothing to write or it failed; None: no cut within the timeout."""
        with self._snapshot_lock:
            own = {name: hash(version()) for name, version in self._versions.items()}
            self.mark(*(name for name, digest in own.items() if self._own_digests.get(name) != digest))
            with self._dirty_lock:
                if not self._dirty:
                    return False
            if fork and not self.gate.close(CUT_TIMEOUT_SECONDS):
                return None
            started = time.monotonic()
            try:
                with self._dirty_lock:
                    dirty, self._dirty = self._dirty, set()
                generation = self._journal_generation + 1  # above every journal on disk
                manifest = self._next_manifest(generation, dirty)
                self._rotate_journal(generation)
                if fork:
                    pid = os.fork()
                    if pid == 0:  # the child: write, swap the manifest in, leave without cleanup
                        code = 1
                        try:
                            _die_with_parent()
                            self._write(manifest, dirty)
                            code = 0
                        except BaseException:
                            traceback.print_exc()  # into the stack's log
                        finally:
                            os._exit(code)
            finally:
                if fork:
                    self.gate.open()
            ok = True
            if fork:
                _, status = os.waitpid(pid, 0)
                ok = os.waitstatus_to_exitcode(status) == 0
            else:
                self._write(manifest, dirty)
            self.last_duration = time.monotonic() - started
            if not ok:
                self.failed_snapshots += 1
                self.last_error = "the snapshot process failed; see the stack log"
                self.mark(*dirty)
                return False
            previous, self.manifest = self.manifest, self._read_manifest() or manifest
            self._own_digests.update(own)
            self.snapshots += 1
            self._remove_superseded(previous, manifest)
            return True

    # --- files --------------------------------------------------------------------------
    def _next_manifest(self, generation: int, dirty: set[str]) -> dict[str, Any]:
        moto = _moto_backends()
        names = {f"moto:{s}" for s in moto} | set(self.parts)
        rewrite = (
            names if ALL in dirty else {n for n in names if n.removeprefix("moto:") in dirty or n in dirty}
        )
        kept = {n: f for n, f in self.manifest["parts"].items() if n in names and n not in rewrite}
        parts = {**kept, **{n: f"part-{n.replace(':', '-')}-{generation}.pickle" for n in rewrite}}
        return {
            "format": FORMAT,
            "generation": generation,
            "taken_at": time.time(),
            "parts": parts,
            "written": sorted(rewrite),
        }

    def _write(self, manifest: dict[str, Any], dirty: set[str]) -> None:
        moto = _moto_backends()
        total = 0
        for name in manifest["written"]:
            value = (
                dict(moto[name.removeprefix("moto:")]) if name.startswith("moto:") else self.parts[name][0]()
            )
            path = self.root / manifest["parts"][name]
            with open(path, "wb") as out:
                pickle.dump(value, out, protocol=PICKLE_PROTOCOL)
            total += path.stat().st_size
        sizes = {n: (self.root / f).stat().st_size for n, f in manifest["parts"].items()}
        manifest = {**manifest, "bytes": sum(sizes.values()), "part_bytes": sizes}
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.root / MANIFEST)

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            manifest: dict[str, Any] = json.loads((self.root / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        if manifest.get("format") != FORMAT:
            raise RuntimeError(
                f"{self.root / MANIFEST} is of format {manifest.get('format')}, this stack reads {FORMAT}: "
                "start fresh with `python -m deploy.local reset`"
            )
        return manifest

    def _load_part(self, file: str) -> Any:
        with open(self.root / file, "rb") as data:
            blob = data.read()
        collecting = gc.isenabled()
        gc.disable()  # a part is a few hundred thousand new objects and no garbage: ~25 % less time
        try:
            return pickle.loads(blob)
        finally:
            if collecting:
                gc.enable()

    def _open_journal(self) -> None:
        path = self.root / f"journal-{self._journal_generation}.jsonl"
        self._journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _rotate_journal(self, generation: int) -> None:
        """Records accepted from now on belong after the cut of snapshot ``generation``."""
        old = self._journal_fd
        self._journal_generation = generation
        self._open_journal()
        if old is not None:
            os.close(old)

    def _remove_superseded(self, previous: dict[str, Any], current: dict[str, Any]) -> None:
        keep = set(current["parts"].values())
        for file in set(previous["parts"].values()) - keep:
            with contextlib.suppress(FileNotFoundError):
                (self.root / file).unlink()
        for journal in self.root.glob("journal-*.jsonl"):
            if _generation_of(journal) < int(current["generation"]):
                journal.unlink(missing_ok=True)

    # --- reporting ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        taken = self.manifest.get("taken_at")
        return {
            "enabled": True,
            "folder": str(self.root),
            "generation": self.manifest["generation"],
            "snapshot_age_seconds": round(time.time() - taken, 1) if taken else None,
            "snapshot_bytes": self.manifest.get("bytes"),
            "snapshots": self.snapshots,
            "failed_snapshots": self.failed_snapshots,
            "last_snapshot_seconds": round(self.last_duration, 3),
            "crash_window_seconds": round(
                max(self.snapshot_seconds, 2 * self.last_duration) + self.last_duration, 1
            ),
            "last_error": self.last_error,
            "restored": self.restored,
        }


def _generation_of(journal: Path) -> int:
    return int(journal.stem.removeprefix("journal-"))


def saved_state(state_dir: str | Path) -> dict[str, Any] | None:
    """What a stopped stack has saved: age, size, services (None when nothing is saved)."""
    root = Path(state_dir) / DIR_NAME
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, ValueError):
        manifest = None
    journals = list(root.glob("journal-*.jsonl")) if root.is_dir() else []
    if manifest is None and not journals:
        return None
    journal_bytes = sum(j.stat().st_size for j in journals)
    taken = (manifest or {}).get("taken_at")
    return {
        "folder": str(root),
        "snapshot_taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(taken)) if taken else None,
        "age_seconds": round(time.time() - taken, 1) if taken else None,
        "bytes": int((manifest or {}).get("bytes", 0)) + journal_bytes,
        "journal_bytes": journal_bytes,
        "services": sorted(n.removeprefix("moto:") for n in (manifest or {}).get("parts", {})),
    }


def reset(state_dir: str | Path) -> bool:
    """Remove the saved state (the stack must be stopped); True if there was any."""
    import shutil

    root = Path(state_dir) / DIR_NAME
    existed = root.exists()
    shutil.rmtree(root, ignore_errors=True)
    return existed
