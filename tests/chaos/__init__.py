"""Chaos suite: the pipeline's guarantees (DESIGN.md, "Guarantees") checked under injected faults.

Run ``make chaos`` (``python -m tests.chaos.run --out reports/chaos.json``; ``--size small`` for
the reduced matrix, ``--only CASE`` for one case). The runner starts a local stack of its own (a
free loopback port, its state in a temporary folder), runs every case on a pipeline of its own
(``renamed`` settings: provisioned, both Lambdas deployed with their mappings, torn down after)
and stops the stack, whatever happens. ``tests/chaos/test_chaos.py`` runs every case at the
small size in ``make test``.

The matrix (sizes in ``cases.SIZES``; full finishes in under 10 minutes on two cores):

=============  ==================================================================================
redelivery     the whole stream delivered four times: processor BatchSize small on the first
               delivery, then its mapping deleted and re-created from TRIM_HORIZON three times
               with other sizes (large after small, small after large, a middle one)
timeouts       processor ``Timeout`` = 1 s and half of the raw bucket's PutObject calls slowed by
               1.1-1.6 s, up to a bound (16; small: 6): invocations time out, the runtime bisects
               and retries; each wait bounded (45 s; small: 40 s); ``workers``: the pool's
               cold starts and timeouts during the case
throttling     20 % at once: Kinesis PutRecords entries (ProvisionedThroughputExceeded, the
               producer resends), DynamoDB BatchWriteItem UnprocessedItems and errors on
               Put/Update/DeleteItem, S3 PutObject SlowDown (503)
kills          SIGKILL of processor and trend workers mid-invocation (5 + 5 during a
               20,000-record stream; small: 2 + 2 during 1,000)
bad_partition  a one-shard stream; every raw-archive write of one symbol (``symbol=<SYM>/``) is
               AccessDenied: its records must be parked and every other record stored; then the
               fault is cleared, ``failures.redrive(parked=True)`` and they must end stored once
fuzz           malformed records (random bytes, truncated / mutated JSON, non-objects, missing
               fields, bad symbols, negative / NaN / infinite / huge prices, wrong types, bad
               volumes and timestamps) mixed with valid ones: each quarantined with a reason,
               no handler crash
=============  ==================================================================================

After its drive, a case waits until the pipeline is quiet (items, objects, mapping counters, the
failure queue and the alert inbox unchanged for 4 s once every sequence number is committed; 20 s
when some never are; bounded) and measures every store on its own.

Reading ``reports/chaos.json``: ``{"size", "ok", "complete", "wall_seconds", "sizes", "cases":
{name: ...}}``, rewritten after every case (``complete``: false while cases are missing); per case:

* ``records_sent`` (Kinesis records accepted -- an aggregate of quotes counts once -- valid +
  malformed, redriven included),
  ``valid_sent`` (distinct (symbol, timestamp) sent valid), ``malformed_sent``;
* ``items`` (processed table, Scan COUNT), ``raw_lines_distinct`` / ``raw_lines_total``
  ((symbol, line) pairs over ``raw/``: equal when no line is duplicated), ``accepted`` (distinct
  accepted sequence numbers in ``manifests/``), ``quarantined`` (reason -> count from the
  manifests; ``quarantined_expected``: the reasons the suite itself expects), ``parked`` (lines
  under ``parked/``; ``parked_in_manifests``), ``failure_queue_depth``;
* ``alerts_expected`` (crossovers over the *final* processed series, per symbol in
  ``alerts_expected_by_symbol``), ``alerts_delivered`` (distinct ``alert_id``s received on the
  inbox), ``alerts_duplicates`` (copies dropped), ``alerts_missing`` / ``alerts_extra`` (first ids
  of each difference and their ``_count``);
* ``faults`` (each plan applied, with the injector's counters per rule), ``mappings`` (the
  runtime's counters per function: invocations, function_errors, records_ok, records_discarded),
  ``processor_crash_log_lines``, ``waits`` (how each wait ended), case extras (``before_redrive``,
  ``redrive``, ``kills_delivered``, ``batch_sizes``, ``mapping_stats_before_recreate``,
  ``workers``...), ``setup_seconds``, ``wall_seconds``;
* ``ok`` and ``violations``: each violated check with its numbers. The checks: items = distinct
  raw lines = total raw lines = accepted = valid records sent; parked = what the case expects
  (0 but before the bad-partition redrive); delivered alert ids = expected alert ids (sets);
  quarantined = malformed sent, each with a reason; an empty failure queue; no processor crash
  (redelivery, fuzz); and the case's own (kills landed, the bad partition's stores before redrive).
"""
