"""Small helpers for the study step's hand-written SQL (see decks.queue and decks.services).

The step runs a handful of statements per rating; on this class of machine Django takes
about 0.5 ms just to compile one queryset, several times what SQLite needs to run it, so
the hot path sends fixed SQL through the cursor. These helpers keep the values the same
as the ORM's on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils.dateparse import parse_datetime


class _LoggedPreparedCursor(CursorDebugWrapper):
    """The query log (DEBUG, tests) of a server-binding cursor, with the values inlined
    as the client-side cursors log them (psycopg keeps no such text for these)."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params)):
            return CursorWrapper.execute(self, sql, params)


class _Statement:
    """What Django's CursorWrapper does for a statement, less its per-call indirection:
    database errors become Django's (so DatabaseUnavailableMiddleware still sees them)
    and a broken transaction is still refused. prepared_cursor uses it only when nothing
    watches the queries (no query log, no execute_wrapper), where CursorWrapper's
    layers cost about as much as running one of the study step's statements on SQLite."""

    __slots__ = ("cursor", "db")

    def __init__(self, cursor, db) -> None:
        self.cursor, self.db = cursor, db

    def execute(self, sql: str, params=None):
        self.db.validate_no_broken_transaction()
        with self.db.wrap_database_errors:
            return self.cursor.execute(sql, params)

    def fetchone(self):
        with self.db.wrap_database_errors:
            return self.cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    @property
    def lastrowid(self):
        return self.cursor.lastrowid


def _watched(db) -> bool:
    """Whether something sees every statement: the query log (tests, DEBUG) or an
    execute_wrapper (the bench's counters)."""
    return db.queries_logged or bool(db.execute_wrappers)


def _ready(db) -> None:
    """What connection.cursor() does first: reconnect if a kept connection has died."""
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()


def _server_binding_cursor(db, binary: bool):
    from django.db.backends.postgresql.base import ServerBindingCursor
    from psycopg.pq import Format

    raw = ServerBindingCursor(db.connection)
    if binary:
        raw.format = Format.BINARY
    return raw


@contextmanager
def prepared_cursor(*, binary: bool = True) -> Iterator:
    """A cursor for the study step's fixed statements. On PostgreSQL it binds parameters
    on the server, so each statement is prepared on its first run in a connection and
    not planned again (settings: prepare_threshold); planning the queue's statement costs
    several times running it. The ORM's own cursors stay client-side and unprepared.
    SQLite has no planning worth saving, but Django's cursor rewrites every statement's
    placeholders with a regular expression on every run: this one remembers them.

    On PostgreSQL the results come in binary, read by psycopg's C loaders; Django's own
    loader for timestamptz text is Python (next_card: 0.32 → 0.27 ms). Datetimes come
    back in UTC as with the ORM. ``binary=False`` is for statements that read a jsonb
    column: Django's JSONField decodes the text itself."""
    db = connections[DEFAULT_DB_ALIAS]
    _ready(db)
    if db.vendor == "postgresql":
        raw = _server_binding_cursor(db, binary)
        logged = _LoggedPreparedCursor
    else:
        raw = db.connection.cursor(factory=_sqlite_cursor_class())
        logged = CursorDebugWrapper
    if _watched(db):
        with (logged if db.queries_logged else CursorWrapper)(raw, db) as cursor:
            yield cursor
        return
    try:
        yield _Statement(raw, db)
    finally:
        with suppress(db.Database.Error):  # as CursorWrapper closes
            raw.close()


@dataclass(slots=True)
class Read:
    """A statement that reads one row, what to make of the row, and, once run, the
    result. A read can go alone (``run``) or ride along with a write (``pipelined``)."""

    sql: str
    params: list
    parse: Callable[[tuple | None], Any]
    binary: bool = True  # False for rows with a jsonb column (see prepared_cursor)
    result: Any = None

    def run(self) -> Any:
        with prepared_cursor(binary=self.binary) as cursor:
            cursor.execute(self.sql, self.params)
            self.result = self.parse(cursor.fetchone())
        return self.result


class _Fetched:
    """A statement already run, its row kept for whoever asks after the block."""

    __slots__ = ("row",)

    def __init__(self, row) -> None:
        self.row = row

    def fetchone(self):
        return self.row


@contextmanager
def pipelined(*, together: bool = True) -> Iterator[Callable[..., Any]]:
    """Yields ``send(sql, params, binary=True)``, which runs a statement that returns rows
    and gives back a handle whose ``fetchone()`` has its first row once the block ends.

    On PostgreSQL the statements sent in the block go to the server together and come
    back in one round trip (psycopg's pipeline mode), one implicit transaction
    committed at the end: a rating's write and the reads of the page that follows it
    wait for the network once instead of three times. Elsewhere, and whenever the
    statements are watched (the query log, execute wrappers), each runs as it is sent
    through prepared_cursor, so the log and the counts see the same statements; so they
    do with ``together=False``, for a block that sends one statement (a pipeline around
    a statement alone costs 20–40 µs more than it)."""
    db = connections[DEFAULT_DB_ALIAS]
    if not together or not pipelines() or _watched(db):

        def send_now(sql: str, params, binary: bool = True) -> _Fetched:
            with prepared_cursor(binary=binary) as cursor:
                cursor.execute(sql, params)
                return _Fetched(cursor.fetchone())

        yield send_now
        return
    _ready(db)
    db.validate_no_broken_transaction()
    sent: list[tuple] = []

    def send(sql: str, params, binary: bool = True) -> _Fetched:
        raw = _server_binding_cursor(db, binary)
        handle = _Fetched(None)
        sent.append((raw, handle))
        raw.execute(sql, params)
        return handle

    try:
        with db.wrap_database_errors:
            with db.connection.pipeline():
                yield send
            for raw, handle in sent:  # the pipeline's end has brought every result in
                handle.row = raw.fetchone()
    finally:
        for raw, _handle in sent:
            with suppress(db.Database.Error):
                raw.close()


def plan_prepared_once(sender, connection, **kwargs) -> None:
    """On a new PostgreSQL connection whose statements are prepared (settings:
    DJANGO_DB_PREPARE), plan them once: left to choose, PostgreSQL re-plans on every run a
    statement whose generic plan it estimates dearer than a custom one (the next card with
    today's counts read inline: 1.34–1.50 ms instead of 0.58–0.61, done_today 0.41–0.43
    instead of 0.32–0.34). Unprepared statements (the ORM's) are planned per run whatever
    this says. A SET rather than a startup option, which poolers such as PgBouncer
    refuse."""
    if connection.vendor != "postgresql" or not _prepares(connection):
        return
    with connection.connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")


def pipelines() -> bool:
    """Whether the study step's statements share round trips: on PostgreSQL with its
    statements prepared (settings: DJANGO_DB_PREPARE; unprepared, the next card read with
    today's counts costs more to plan than the round trip saves: 1.28 → 1.68 ms) and a
    libpq that has pipeline mode (14 or later; psycopg's binary wheels bring 17)."""
    db = connections[DEFAULT_DB_ALIAS]
    return db.vendor == "postgresql" and _prepares(db) and _libpq_pipelines()


def _prepares(db) -> bool:
    """Whether psycopg prepares this PostgreSQL connection's server-bound statements
    (settings.py sets prepare_threshold unless DJANGO_DB_PREPARE=0)."""
    return db.settings_dict["OPTIONS"].get("prepare_threshold") is not None


@cache
def _libpq_pipelines() -> bool:
    from psycopg import Pipeline

    return Pipeline.is_supported()


@cache
def _sqlite_cursor_class():
    from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX, SQLiteCursorWrapper

    @lru_cache(maxsize=256)
    def qmark(query: str) -> str:
        return FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")

    class FixedStatementCursor(SQLiteCursorWrapper):
        """Django's SQLite cursor, converting each fixed statement to qmark style once."""

        def convert_query(self, query, *, param_names=None):
            if param_names is None:
                return qmark(query)
            return super().convert_query(query, param_names=param_names)

    return FixedStatementCursor


def db_datetime(value: datetime | None):
    """A datetime as the ORM would store it (naive UTC text on SQLite)."""
    return datetime_adapter()(value)


def py_datetime(value) -> datetime | None:
    """A datetime column's value as an aware UTC datetime, whatever the backend returned."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = parse_datetime(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Review columns in the order the hand-written inserts below take them.
REVIEW_COLUMNS = [
    "user_id", "card_id", "rating", "reviewed_at", "time_taken_ms", "retrievability",
    "state_before", "step_before", "due_before", "stability_before", "difficulty_before",
    "state_after", "step_after", "due_after", "stability_after", "difficulty_after",
    "scheduled_days",
]  # fmt: skip
_DATETIME_COLUMNS = {REVIEW_COLUMNS.index(c) for c in ("reviewed_at", "due_before", "due_after")}


def review_values(**values) -> list:
    """One Review row's values in REVIEW_COLUMNS order, datetimes adapted for the database."""
    row = [values[column] for column in REVIEW_COLUMNS]
    adapt = datetime_adapter()
    for i in _DATETIME_COLUMNS:
        row[i] = adapt(row[i])
    return row


def _sqlite_datetime(value: datetime | None) -> str | None:
    return None if value is None else str(value.astimezone(UTC).replace(tzinfo=None))


def _as_is(value: datetime | None) -> datetime | None:
    return value


@cache
def _adapter(vendor: str):
    return _sqlite_datetime if vendor == "sqlite" else _as_is


def datetime_adapter():
    """A fast equivalent of the backend's adapt_datetimefield_value (called for every
    datetime the hot path and the bulk inserts send): SQLite stores naive UTC text, what
    Django writes with USE_TZ; PostgreSQL takes aware values as they are."""
    return _adapter(connection.vendor)


@cache
def _fields(model, vendor: str) -> tuple[list[str], list[tuple]]:
    """The model's concrete fields' attribute names, in field order, and for those whose
    database value the ORM converts on this backend (as SQLCompiler.get_converters finds
    them): (position, column, converters)."""
    names, converted = [], []
    for i, field in enumerate(model._meta.concrete_fields):
        names.append(field.attname)
        column = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converted.append((i, column, found))
    return names, converted


def instance(model, values: Sequence):
    """A model instance from a raw row holding all of the model's concrete columns in
    field order, converted as the ORM converts them (datetimes, JSON, booleans).

    Built as Model.from_db builds it, less Model.__init__'s per-field work, which on a
    fresh instance comes down to setting each attribute: a third of the time for the
    study step's rows. Models with init signal receivers go through from_db."""
    names, converted = _fields(model, connection.vendor)
    row = list(values)
    for i, column, converters in converted:
        value = row[i]
        for convert in converters:
            value = convert(value, column, connection)
        row[i] = value
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return model.from_db(connection.alias, None, row)
    found = model.__new__(model)
    found.__dict__.update(zip(names, row, strict=True))
    found._state = state = ModelState()
    state.adding, state.db = False, connection.alias
    return found


@cache
def columns(model, alias: str) -> str:
    """``alias.column, …`` for all of the model's concrete fields, in field order."""
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


def insert_rows(model, columns: list[str], rows: list) -> None:
    """Append many rows at once with one executemany: a fraction of bulk_create's cost,
    which builds and prepares a model instance per row (and on SQLite splits the insert
    into batches of ~100 rows). For importing decks and histories."""
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {model._meta.db_table} ({', '.join(columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))})",
            rows,
        )


def insert_reviews(rows: list[list]) -> None:
    from decks.models import Review

    insert_rows(Review, REVIEW_COLUMNS, rows)


def _libpq_streams_chunks() -> bool:
    from psycopg import pq

    return pq.version() >= 170000


def stream_rows(queryset, chunk: int = 5000):
    """The rows of a values_list() queryset straight from the cursor, without the ORM's
    per-row conversions (a million-row export spends most of its time there). Datetimes
    come back as the backend gives them: text on SQLite, datetimes on PostgreSQL.

    Memory stays flat: SQLite steps through the result as it is read. PostgreSQL streams
    it in chunks (libpq's chunked mode) where libpq has it: the server keeps sending while
    this process works through the rows it has, so on two cores the two overlap, where a
    server-side cursor's FETCH would leave the server idle between batches (a million-row
    reviews export: 6.9 s → 3.5 s to read and format in a probe)."""
    sql, params = queryset.query.sql_with_params()
    if connection.vendor == "postgresql" and _libpq_streams_chunks():
        with connection.cursor() as cursor, connection.wrap_database_errors:
            if connection.queries_logged:  # the query log (DEBUG, tests) sees it as usual
                connection.queries_log.append(
                    {"sql": connection.ops.compose_sql(sql, params), "time": "0.000"}
                )
            yield from cursor.cursor.stream(sql, params, size=chunk)
        return
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk):
            yield from rows
