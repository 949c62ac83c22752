"""The local Athena endpoint's pure parts: Trino SQL handling, Athena types/values/files, the Glue table.

The engine is also run end to end over an in-memory fake warehouse (no stack, no network): the
analysis queries of ``helpers.notebook.athena`` go through the same parse → transpile → DuckDB path as
behind the endpoint, and the crossover SQL is compared with ``helpers.core.indicators``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.athena.engine import Engine, QueryCancelled
from deploy.local.athena.formats import (
    Column,
    athena_column,
    format_double,
    format_value,
    glue_to_duckdb,
    parse_csv,
    to_csv,
    to_text,
)
from deploy.local.athena.sql import (
    QueryFailed,
    engine_error,
    name_columns,
    parse,
    partition_filters,
    table_references,
    transpile,
)
from deploy.local.athena.tables import Partition, S3Object, TableDef
from helpers.core import indicators, layout
from helpers.notebook import athena
from helpers.pipeline import catalog
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(raw_bucket="unit-raw", results_bucket="unit-results")


# --- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (100.0, "100.0"),
        (0.001, "0.001"),
        (9.9e-4, "9.9E-4"),
        (1e7, "1.0E7"),
        (123456789.123, "1.23456789123E8"),
        (-2.5e-10, "-2.5E-10"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (0.0, "0.0"),
    ],
)
def test_doubles_print_as_java_does(value: float, text: str) -> None:
    assert format_double(value) == text
    if text not in ("NaN", "-Infinity"):
        assert float(text) == value  # round-trips: pyathena's float() gets the same double


@pytest.mark.parametrize(
    ("value", "athena_type", "text"),
    [
        (None, "varchar", None),
        ("AAPL", "varchar", "AAPL"),
        (42, "bigint", "42"),
        (True, "boolean", "true"),
        (dt.datetime(2026, 11, 24, 10, 0, 0, 123456), "timestamp", "2026-11-24 10:00:00.123"),
        (dt.datetime(2026, 11, 24, 10, 0), "timestamp", "2026-11-24 10:00:00.000"),
        (
            dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC),
            "timestamp with time zone",
            "2026-11-24 10:00:00.000 UTC",
        ),
        (dt.date(2026, 7, 29), "date", "2026-07-29"),
        (Decimal("1.50"), "decimal", "1.50"),
        ([1, None, 3], "array", "[1, null, 3]"),
        ({"a": 1.5}, "map", "{a=1.5}"),
    ],
)
def test_values_print_as_athena_does(value: object, athena_type: str, text: str | None) -> None:
    assert format_value(value, athena_type) == text


@pytest.mark.parametrize(
    ("duckdb_type", "athena_type", "precision", "scale"),
    [
        ("VARCHAR", "varchar", 2147483647, 0),
        ("BIGINT", "bigint", 19, 0),
        ("HUGEINT", "bigint", 19, 0),  # DuckDB's sum(bigint); Trino's is bigint
        ("INTEGER", "integer", 10, 0),
        ("DOUBLE", "double", 17, 0),
        ("BOOLEAN", "boolean", 0, 0),
        ("DATE", "date", 0, 0),
        ("TIMESTAMP", "timestamp", 3, 0),
        ("TIMESTAMP WITH TIME ZONE", "timestamp with time zone", 3, 0),
        ("DECIMAL(38,0)", "decimal", 38, 0),
        ("DECIMAL(10,2)", "decimal", 10, 2),
        ("INTEGER[]", "array", 0, 0),
        ("STRUCT(k INTEGER)", "row", 0, 0),
        ("MAP(VARCHAR, INTEGER)", "map", 0, 0),
    ],
)
def test_duckdb_types_map_to_athena_names(
    duckdb_type: str, athena_type: str, precision: int, scale: int
) -> None:
    column = athena_column("c", duckdb_type)
    assert (column.type, column.precision, column.scale) == (athena_type, precision, scale)
    assert column.info()["CaseSensitive"] is (athena_type == "varchar")


@pytest.mark.parametrize(
    ("glue", "duckdb"),
    [
        ("string", "VARCHAR"),
        ("bigint", "BIGINT"),
        ("double", "DOUBLE"),
        ("decimal(10,2)", "DECIMAL(10,2)"),
        ("varchar(20)", "VARCHAR"),
        ("array<struct<a:int,b:map<string,double>>>", 'STRUCT("a" INTEGER, "b" MAP(VARCHAR, DOUBLE))[]'),
    ],
)
def test_glue_types_map_to_duckdb(glue: str, duckdb: str) -> None:
    assert glue_to_duckdb(glue) == duckdb


def test_unknown_glue_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported column type"):
        glue_to_duckdb("uniontype<int,string>")


def test_result_csv_quotes_everything_and_keeps_null_apart_from_empty() -> None:
    columns = [Column("a", "varchar"), Column("b", "bigint")]
    rows = [('say "hi"', None), ("", "1"), ("two\nlines", "2")]
    data = to_csv(columns, rows)
    assert data == b'"a","b"\n"say ""hi""",\n"","1"\n"two\nlines","2"\n'
    assert parse_csv(data) == (["a", "b"], rows)
    assert to_text([("t1",), ("t2",)]) == b"t1\nt2\n"


# --- SQL handling -----------------------------------------------------------------------


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(QueryFailed) as err:
        parse("SELECT price\nFROM raw_quotes WHERE")
    assert err.value.name == "SYNTAX_ERROR"
    assert err.value.reason.startswith("SYNTAX_ERROR: line 2:")


@pytest.mark.parametrize("sql", ["", "SELECT 1; SELECT 2", "SELECT 'unterminated"])
def test_unusable_statements_fail_before_running(sql: str) -> None:
    with pytest.raises(QueryFailed):
        parse(sql)


def test_table_references_skip_cte_names() -> None:
    tree = parse('WITH q AS (SELECT * FROM "stock_trend"."raw_quotes") SELECT * FROM q JOIN other o ON TRUE')
    assert sorted((t.db, t.name) for t in table_references(tree)) == [
        ("", "other"),
        ("stock_trend", "raw_quotes"),
    ]


def test_partition_predicates_prune_only_when_certain() -> None:
    keys = ["symbol", "dt"]
    ref = table_references(
        parse("SELECT * FROM t WHERE symbol IN ('A', 'B') AND dt = '2026-07-29' AND price > 1")
    )[0]
    assert partition_filters(ref, keys) == {"symbol": {"A", "B"}, "dt": {"2026-07-29"}}
    ref = table_references(parse("SELECT * FROM t x WHERE 'A' = x.symbol"))[0]
    assert partition_filters(ref, keys) == {"symbol": {"A"}}
    for sql in (
        "SELECT * FROM t WHERE symbol = 'A' OR dt = '2026-07-29'",  # OR: cannot prune
        "SELECT * FROM t JOIN u ON TRUE WHERE symbol = 'A'",  # which relation's symbol?
        "SELECT * FROM t WHERE upper(symbol) = 'A'",
    ):
        assert partition_filters(table_references(parse(sql))[0], keys) is None


def test_unnamed_columns_are_named_like_trino() -> None:
    tree = parse("SELECT symbol, count(*), 5 / 2 AS half FROM t")
    name_columns(tree)
    assert [e.alias_or_name for e in tree.expressions] == ["symbol", "_col1", "half"]


def test_transpiled_sql_keeps_trino_semantics() -> None:
    import duckdb

    sql = "SELECT 5 / 2, 5.0 / 2, min_by(x, t), max_by(x, t), substr('abcdef', 2, 3)"
    tree = parse(sql + " FROM (VALUES (1, 2)) AS v(x, t)")
    name_columns(tree)
    con = duckdb.connect(config={"integer_division": True})  # as the engine runs it
    assert con.execute(transpile(tree)).fetchall() == [(2, Decimal("2.500000"), 1, 1, "bcd")]


def test_duckdb_errors_get_athena_error_names() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t (price DOUBLE)")
    with pytest.raises(duckdb.Error) as missing_column:
        con.execute("SELECT nope FROM t")
    with pytest.raises(duckdb.Error) as missing_function:
        con.execute("SELECT no_such_fn(price) FROM t")
    assert engine_error(missing_column.value).reason.startswith('COLUMN_NOT_FOUND: Referenced column "nope"')
    assert engine_error(missing_function.value).name == "FUNCTION_NOT_FOUND"


# --- the Glue table ---------------------------------------------------------------------


def test_table_input_is_an_external_json_table_partitioned_by_symbol_and_year() -> None:
    table = catalog.table_input(SETTINGS)
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert [c["Name"] for c in table["PartitionKeys"]] == ["symbol", "year"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert "symbol" not in columns and columns["volume"] == "bigint" and columns["timestamp"] == "string"
    assert (
        table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
        == "org.openx.data.jsonserde.JsonSerDe"
    )
    assert table["StorageDescriptor"]["Location"] == "s3://unit-raw/raw/"
    ddl = catalog.create_table_ddl(SETTINGS)
    assert "`timestamp` string" in ddl and "PARTITIONED BY (`symbol` string, `year` string)" in ddl


def test_partitions_are_read_from_object_keys() -> None:
    keys = [
        "raw/symbol=AAPL/year=2026/b1.ndjson",
        "raw/symbol=EURUSD=X/year=2025/b2.ndjson",
        "raw/symbol=AAPL/year=2026/b3.ndjson",
        "quarantine/2026-07-29/x.json",
    ]
    assert catalog.partitions_from_keys(keys) == {("AAPL", "2026"), ("EURUSD=X", "2025")}


def test_symbols_filter_is_validated() -> None:
    assert "WHERE symbol IN ('AAPL', 'MSFT')" in athena.render("sma", SETTINGS, symbols=["MSFT", "AAPL"])
    with pytest.raises(ValueError):
        athena.render("sma", SETTINGS, symbols=["AAPL'; DROP TABLE x; --"])


@pytest.mark.parametrize(
    ("start", "end", "where"),
    [
        ("2013-05-01", "2013-05-02",
         """"timestamp" >= '2013-05-01' AND "timestamp" < '2013-05-02' AND year IN ('2013')"""),
        ("2012-12-31", "2014",
         """"timestamp" >= '2012-12-31' AND "timestamp" < '2014' AND year IN ('2012', '2013')"""),
        ("2013", None, """"timestamp" >= '2013' AND year >= '2013'"""),
        (None, "2013-06-01T00:00:00Z", """"timestamp" < '2013-06-01T00:00:00Z' AND year <= '2013'"""),
        ("2014", "2013", """"timestamp" >= '2014' AND "timestamp" < '2013' AND false"""),
    ],
)  # fmt: skip
def test_a_time_range_filters_the_timestamps_and_the_year_partitions(
    start: str | None, end: str | None, where: str
) -> None:
    sql = athena.render("anomalies", SETTINGS, symbols=["AAPL"], start=start, end=end)
    assert f"WHERE symbol IN ('AAPL') AND {where}\n" in sql
    with pytest.raises(ValueError, match="start must be a UTC timestamp"):
        athena.render("sma", SETTINGS, start="2013-05-01' OR true --")


# --- the engine over a fake warehouse ---------------------------------------------------


class FakeWarehouse:
    """Glue table + S3 objects in memory, in the shape the engine reads them."""

    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.data = {f"unit-raw/raw/{layout.partition_dir(*k)}b.ndjson": body for k, body in objects.items()}
        self.partition_list = [
            Partition(k, f"s3://unit-raw/raw/{layout.partition_dir(*k)}") for k in sorted(objects)
        ]
        source = catalog.table_input(SETTINGS)
        sd = source["StorageDescriptor"]
        self.table_def = TableDef(
            database=SETTINGS.glue_database,
            name=SETTINGS.glue_table,
            location=sd["Location"],
            columns=tuple((c["Name"], c["Type"]) for c in sd["Columns"]),
            partition_keys=tuple((c["Name"], c["Type"]) for c in source["PartitionKeys"]),
            serde=sd["SerdeInfo"]["SerializationLibrary"],
        )

    def table(self, database: str, name: str) -> TableDef | None:
        return self.table_def if (database, name) == (SETTINGS.glue_database, SETTINGS.glue_table) else None

    def database_exists(self, name: str) -> bool:
        return name == SETTINGS.glue_database

    def partitions(self, table: TableDef) -> list[Partition]:
        return self.partition_list

    def objects(self, locations: list[str]) -> list[S3Object]:
        prefixes = [loc.removeprefix("s3://") for loc in locations]
        return [S3Object(p, len(b)) for p, b in sorted(self.data.items()) if p.startswith(tuple(prefixes))]

    def read(self, objects: list[S3Object]) -> dict[str, bytes]:
        return {o.path: self.data[o.path] for o in objects}


def quotes(symbol: str, prices: list[float], day: str = "2026-07-29") -> list[dict[str, object]]:
    start = dt.datetime.fromisoformat(f"{day}T13:30:00+00:00")
    rows = []
    for i, price in enumerate(prices):
        stamp = (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            {"symbol": symbol, "timestamp": stamp, "price": price, "previous_close": 100.0, "open": price,
             "high": price, "low": price, "volume": 10 * i, "source": "unit", "produced_at": stamp}
        )  # fmt: skip
    return rows


def engine_for(records: list[dict[str, object]]) -> Engine:
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in records:
        partition = layout.raw_partition(str(r["symbol"]), str(r["timestamp"]))
        grouped.setdefault(partition, []).append(json.dumps(r))
    warehouse = FakeWarehouse({k: ("\n".join(v) + "\n").encode() for k, v in grouped.items()})
    return Engine(warehouse)  # type: ignore[arg-type]


def crossover_rows(
    engine: Engine, short: int = indicators.SHORT_WINDOW, long: int = indicators.LONG_WINDOW
) -> list[tuple[object, ...]]:
    sql = athena.render("crossovers", SETTINGS, short=short, long=long)
    result = engine.run(sql, database=SETTINGS.glue_database)
    return [(r[0], r[1], r[2], float(r[3]), float(r[4]), float(r[5])) for r in result.rows]  # type: ignore[arg-type]


def expected_signals(
    records: list[dict[str, object]], short: int = indicators.SHORT_WINDOW, long: int = indicators.LONG_WINDOW
) -> list[tuple[object, ...]]:
    signals = indicators.crossovers_by_symbol(records, short=short, long=long)
    return [
        (s.symbol, s.timestamp, s.signal, s.price, s.sma_short, s.sma_long)
        for found in signals.values()
        for s in found
    ]


def test_crossover_sql_equals_the_shared_definition_bit_for_bit() -> None:
    rnd = random.Random(7)
    records = []
    for symbol in ("AAPL", "MSFT"):
        price, prices = 100.0, []
        for i in range(160):
            price = round(price * (1 + rnd.gauss(0, 0.01)), 4)
            prices.append(100.0 if 60 <= i < 90 else price)  # a flat run: state 0 keeps the memory
        records += quotes(symbol, prices)
    rows = crossover_rows(engine_for(records))
    assert rows == expected_signals(records)
    assert len(rows) >= 6


def walk_records(seed: int, bars: int) -> list[dict[str, object]]:
    """Two symbols of random-walk prices with flat runs (state 0 keeps the memory)."""
    rnd = random.Random(seed)
    records = []
    for symbol in ("AAPL", "BRK.B"):
        price, prices = 100.0, []
        for _ in range(bars):
            if rnd.random() > 0.15:
                price = round(price * (1 + rnd.gauss(0, 0.01)), 4)
            prices.append(price)
        records += quotes(symbol, prices)
    return records


# Every pair a user can pick is 1 <= short < long <= MAX_WINDOW: the edges, common pairs, and
# every pair up to 10 bars exhaustively (the SQL is generated: the weights, the windows and the
# first bar must follow the windows).
SQL_WINDOW_PAIRS = sorted(
    {(s, n) for n in range(2, 11) for s in range(1, n)}
    | {(1, 200), (199, 200), (50, 200), (10, 30), (12, 26), (9, 21), (20, 50), (7, 13)}
)


@pytest.mark.parametrize(("short", "long"), SQL_WINDOW_PAIRS)
def test_crossover_sql_equals_the_shared_definition_for_every_window_pair(short: int, long: int) -> None:
    records = walk_records(seed=100 * short + long, bars=long + 90)
    rows = crossover_rows(engine_for(records), short, long)
    assert rows == expected_signals(records, short, long)
    assert rows, "the series cross over"


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, indicators.MAX_WINDOW).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
    st.integers(0, 10**6),
)
def test_crossover_sql_equals_the_shared_definition_for_any_window_pair(
    pair: tuple[int, int], seed: int
) -> None:
    short, long = pair
    records = walk_records(seed, bars=long + 40)
    assert crossover_rows(engine_for(records), short, long) == expected_signals(records, short, long)


@pytest.mark.parametrize(("short", "long"), [(5, 20), (10, 30), (1, 2)])
def test_sma_sql_follows_the_windows(short: int, long: int) -> None:
    records = walk_records(seed=1, bars=long + 10)
    result = engine_for(records).run(
        athena.render("sma", SETTINGS, short=short, long=long), database=SETTINGS.glue_database
    )
    assert [c.name for c in result.columns] == ["symbol", "timestamp", "price", f"sma{short}", f"sma{long}"]
    assert len(result.rows) == 2 * 11  # from each symbol's long-th bar on
    prices = [float(r["price"]) for r in records if r["symbol"] == "AAPL"]  # type: ignore[arg-type]
    first = next(r for r in result.rows if r[0] == "AAPL")
    assert float(first[3]) == pytest.approx(sum(prices[long - short : long]) / short)
    assert float(first[4]) == pytest.approx(sum(prices[:long]) / long)


def test_default_queries_are_the_deployed_windows() -> None:
    assert athena.queries(indicators.SHORT_WINDOW, indicators.LONG_WINDOW) == athena.QUERIES
    sql = athena.QUERIES["crossovers"]
    assert "4 * sum_short > 1 * sum_long" in sql and "bar >= 20" in sql and "/ 20000000" in sql
    assert "3 * sum_short > 1 * sum_long" in athena.crossover_sql(10, 30)
    with pytest.raises(ValueError, match="windows must"):
        athena.render("crossovers", SETTINGS, short=20, long=5)


def test_crossover_sql_rounds_micro_units_half_to_even(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100.0000005 * 1e6 is exactly 100000000.5: half-even gives 100000000, half-up 100000001.
    # Search a short series where that choice changes the signals, so the test can tell them apart.
    rnd = random.Random(3)
    half_up = lambda price: int(float(price) * 1_000_000 + 0.5)  # noqa: E731
    for _ in range(500):
        prices = [rnd.choice([100.0, 100.0000005, 100.0000015, 99.9999995, 100.000001]) for _ in range(60)]
        records = quotes("TIE", prices)
        even = expected_signals(records)
        with monkeypatch.context() as m:
            m.setattr(indicators, "price_units", half_up)
            if expected_signals(records) != even:
                break
    else:
        pytest.fail("no series found where rounding half-up differs from half-even")
    assert crossover_rows(engine_for(records)) == even


def test_engine_runs_every_analysis_query_and_reports_types() -> None:
    records = quotes("AAPL", [100 + i % 7 for i in range(30)]) + quotes(
        "MSFT", [200 - i for i in range(25)], "2026-07-30"
    )
    engine = engine_for(records + records[:3])  # a redelivered copy is counted once
    for name in athena.QUERIES:
        result = engine.run(athena.render(name, SETTINGS), database=SETTINGS.glue_database)
        assert result.data_scanned > 0 and result.columns, name
    volume = engine.run(athena.render("avg_volume_by_symbol", SETTINGS), database=SETTINGS.glue_database)
    assert [(c.name, c.type) for c in volume.columns][:3] == [
        ("symbol", "varchar"),
        ("quotes", "bigint"),
        ("avg_volume", "double"),
    ]
    assert [r[:2] for r in volume.rows] == [("AAPL", "30"), ("MSFT", "25")]


def test_engine_prunes_partitions_and_enforces_the_cutoff() -> None:
    records = quotes("AAPL", [100.0] * 5) + quotes("MSFT", [100.0] * 5)
    engine = engine_for(records)
    everything = engine.run(f"SELECT count(*) FROM {SETTINGS.glue_table}", database=SETTINGS.glue_database)
    aapl = engine.run(
        f"SELECT count(*) FROM {SETTINGS.glue_table} WHERE symbol = 'AAPL'", database=SETTINGS.glue_database
    )
    assert (everything.rows, aapl.rows) == ([("10",)], [("5",)])
    assert aapl.data_scanned * 2 == everything.data_scanned
    assert [c.name for c in everything.columns] == ["_col0"]
    with pytest.raises(QueryCancelled, match="Bytes scanned limit was exceeded") as err:
        engine.run(f"SELECT * FROM {SETTINGS.glue_table}", database=SETTINGS.glue_database, bytes_cutoff=10)
    assert err.value.data_scanned == 10


def test_a_time_range_reads_only_its_years_and_keeps_the_results_of_the_whole_table() -> None:
    # GIVEN daily bars of two symbols over 2012-2014 (one partition per symbol and year)
    days = [dt.date(2012, 1, 2) + dt.timedelta(days=n) for n in range(3 * 365)]
    records = [
        r
        for symbol in ("AAPL", "MSFT")
        for day in days
        for r in quotes(symbol, [100.0 + day.toordinal() % 13], day.isoformat())
    ]
    engine = engine_for(records)
    everything = engine.run(athena.render("daily_ohlc", SETTINGS), database=SETTINGS.glue_database)
    # WHEN a query asks for May 2013 of AAPL
    sql = athena.render("daily_ohlc", SETTINGS, symbols=["AAPL"], start="2013-05-01", end="2013-06-01")
    may = engine.run(sql, database=SETTINGS.glue_database)
    # THEN it returns those rows of the whole table's result, reading one partition of the six
    assert may.rows == [r for r in everything.rows if r[0] == "AAPL" and r[1].startswith("2013-05")]
    assert len(may.rows) == 31
    assert may.data_scanned * 5 < everything.data_scanned
    # and the quotes CTE still gives each row its date, dt, now read from the timestamp
    one_day = athena.render("avg_volume_by_symbol", SETTINGS).replace(
        "FROM quotes\n", "FROM quotes\nWHERE dt = '2013-05-01'\n"
    )
    counts = engine.run(one_day, database=SETTINGS.glue_database)
    assert [r[:2] for r in counts.rows] == [("AAPL", "1"), ("MSFT", "1")]


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT nope FROM raw_quotes", "COLUMN_NOT_FOUND"),
        ("SELECT * FROM missing_table", "TABLE_NOT_FOUND"),
        ("SELECT * FROM other_db.raw_quotes", "SCHEMA_NOT_FOUND"),
        ("SELECT * FROM hive.stock_trend.raw_quotes", "CATALOG_NOT_FOUND"),
        ("CREATE TABLE x AS SELECT 1", "NOT_SUPPORTED"),
    ],
)
def test_engine_failures_carry_athena_error_names(sql: str, name: str) -> None:
    with pytest.raises(QueryFailed) as err:
        engine_for(quotes("AAPL", [1.0])).run(sql, database=SETTINGS.glue_database)
    assert err.value.name == name


def test_pyathena_clients_all_use_the_settings_endpoint(tmp_path: object) -> None:
    # pyathena gives endpoint_url to its Athena client only; the S3 client PandasCursor reads the
    # results with must reach the same endpoint through the session's configured endpoint.
    local = load_settings(local_port=4599, state_dir=str(tmp_path))
    with athena.connect(local, cursor="pandas") as conn:
        assert conn.client.meta.endpoint_url == "http://127.0.0.1:4599"
        assert conn.s3_client.meta.endpoint_url == "http://127.0.0.1:4599"
        assert conn.work_group == local.athena_workgroup and conn.schema_name == local.glue_database
    aws_target = load_settings(
        target="aws", state_dir=str(tmp_path), raw_bucket="r-b-1", results_bucket="r-b-2"
    )
    with athena.connect(aws_target, cursor="default") as conn:
        assert conn.s3_client.meta.endpoint_url.startswith("https://s3.")


def test_bad_json_fails_naming_the_s3_object() -> None:
    warehouse = FakeWarehouse({("AAPL", "2026"): b'{"price": "abc"}\n', ("MSFT", "2026"): b""})
    with pytest.raises(QueryFailed) as err:
        Engine(warehouse).run("SELECT * FROM raw_quotes", database=SETTINGS.glue_database)  # type: ignore[arg-type]
    assert err.value.name == "HIVE_BAD_DATA" and err.value.error_type == 1001
    assert "s3://unit-raw/raw/symbol=AAPL/year=2026/b.ndjson" in err.value.message
