"""decks.rawsql.prepared_cursor and pipelined: the study step's statements keep Django's
guarantees (its error classes, its broken-transaction check, its query log and execute
wrappers) whether or not anything is watching the queries."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, Error, connection, transaction
from django.db.models.signals import post_init
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from decks.models import Deck
from decks.rawsql import columns, instance, pipelined, pipelines, prepared_cursor
from tests.conftest import make_deck

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["unwatched", "query log"])
def watched(request):
    """Each behaviour is checked with nothing watching the queries (production) and with
    the query log on (DEBUG, the query-budget tests), which take different paths."""
    if request.param == "unwatched":
        yield
    else:
        with CaptureQueriesContext(connection):
            yield


def test_a_statement_answers_rows_and_closes_its_cursor(watched):
    with prepared_cursor() as cursor:
        cursor.execute("SELECT %s + 1, %s", [41, "x"])
        assert cursor.fetchone() == (42, "x")
        cursor.execute("SELECT 1 WHERE 1 = 0")
        assert cursor.fetchone() is None
        cursor.execute("UPDATE auth_user SET first_name = %s WHERE id < 0", ["nobody"])
        assert cursor.rowcount == 0
    with pytest.raises(Error):
        cursor.execute("SELECT 1")


def test_database_errors_are_djangos_own(watched):
    with prepared_cursor() as cursor, pytest.raises(DatabaseError) as raised:
        cursor.execute("SELECT no_such_column FROM no_such_table")
    # The driver's error, translated as the ORM translates it: the 503 page and the
    # callers' except clauses name Django's classes.
    assert type(raised.value).__module__ == "django.db.utils"


def test_a_transaction_marked_for_rollback_runs_nothing_more(watched):
    with transaction.atomic():
        transaction.set_rollback(True)
        with prepared_cursor() as cursor, pytest.raises(TransactionManagementError):
            cursor.execute("SELECT 1")


def test_the_query_log_and_execute_wrappers_see_every_statement():
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as logged, prepared_cursor() as cursor:
        cursor.execute("SELECT %s", [7])
        assert cursor.fetchone() == (7,)
    assert len(logged) == 1
    assert "7" in logged[0]["sql"]  # with its value, as the ORM's statements are logged
    with connection.execute_wrapper(wrapper), prepared_cursor() as cursor:
        cursor.execute("SELECT %s", [8])
        assert cursor.fetchone() == (8,)
    assert seen == ["SELECT %s"]


# --- pipelined(): statements that share a round trip on PostgreSQL ----------------------


def test_pipelined_statements_give_their_rows_after_the_block(watched):
    with pipelined() as send:
        first = send("SELECT %s + 1, %s", [41, "x"])
        empty = send("SELECT 1 WHERE 1 = 0", [])
    assert first.fetchone() == (42, "x")
    assert empty.fetchone() is None


def test_a_pipelined_read_sees_the_write_sent_before_it(watched, student):
    with pipelined() as send:
        write = send(
            "UPDATE auth_user SET first_name = %s WHERE id = %s RETURNING id", ["Al", student.pk]
        )
        read = send("SELECT first_name FROM auth_user WHERE id = %s", [student.pk])
    assert write.fetchone() == (student.pk,)
    assert read.fetchone() == ("Al",)


def test_pipelined_errors_are_djangos_own_and_the_connection_carries_on(watched):
    with transaction.atomic():  # a savepoint to go back to: the test runs in a transaction
        with pytest.raises(DatabaseError) as raised, pipelined() as send:
            send("SELECT 1", [])
            send("SELECT no_such_column FROM no_such_table", [])
        assert type(raised.value).__module__ == "django.db.utils"
        transaction.set_rollback(True)
    with prepared_cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_pipelined_refuses_a_transaction_marked_for_rollback(watched):
    with transaction.atomic():
        transaction.set_rollback(True)
        with pytest.raises(TransactionManagementError), pipelined() as send:
            send("SELECT 1", [])


def test_the_query_log_sees_each_pipelined_statement():
    with CaptureQueriesContext(connection) as logged, pipelined() as send:
        send("SELECT %s", [7])
        send("SELECT %s", [8])
    assert [q["sql"][-1] for q in logged] == ["7", "8"]


@pytest.mark.skipif(not pipelines(), reason="PostgreSQL's pipeline mode")
def test_unwatched_pipelined_statements_share_one_round_trip(monkeypatch):
    """psycopg's pipeline mode: the statements go together and are synced once."""
    synced = []
    pipeline = type(connection.connection).pipeline

    def counted(conn, *args, **kwargs):
        synced.append(1)
        return pipeline(conn, *args, **kwargs)

    monkeypatch.setattr(type(connection.connection), "pipeline", counted)
    with pipelined() as send:
        rows = [send("SELECT %s", [n]) for n in range(3)]
    assert synced == [1]
    assert [row.fetchone() for row in rows] == [(0,), (1,), (2,)]
    with pipelined(together=False) as send:  # one statement alone: no pipeline around it
        row = send("SELECT %s", [3])
    assert synced == [1]
    assert row.fetchone() == (3,)


# --- instance(): model instances from raw rows -------------------------------------------


def test_an_instance_from_a_raw_row_is_the_orms_own(student):
    deck = make_deck("Raw", cards=1)
    orm = Deck.objects.get(pk=deck.pk)
    with prepared_cursor() as cursor:
        cursor.execute(f"SELECT {columns(Deck, 'd')} FROM decks_deck d WHERE d.id = %s", [deck.pk])
        built = instance(Deck, cursor.fetchone())
    fields = [f.attname for f in Deck._meta.concrete_fields]
    assert [getattr(built, f) for f in fields] == [getattr(orm, f) for f in fields]
    assert (built._state.adding, built._state.db) == (False, orm._state.db)
    built.title = "Renamed"
    built.save()  # an UPDATE of the row it came from, as for a fetched instance
    assert list(Deck.objects.values_list("pk", "title")) == [(deck.pk, "Renamed")]


def test_models_with_init_signal_receivers_are_built_through_from_db(student):
    deck = make_deck("Raw", cards=1)
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    with prepared_cursor() as cursor:
        cursor.execute(f"SELECT {columns(Deck, 'd')} FROM decks_deck d WHERE d.id = %s", [deck.pk])
        row = cursor.fetchone()
    post_init.connect(receiver, sender=Deck)
    try:
        built = instance(Deck, row)
    finally:
        post_init.disconnect(receiver, sender=Deck)
    assert seen == [built]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's settings")
def test_unprepared_statements_do_not_share_round_trips(monkeypatch):
    """With DJANGO_DB_PREPARE=0 (a pooler in transaction mode) every statement is
    planned on each run, and the rate view's inline counts cost more than they save."""
    monkeypatch.delitem(connection.settings_dict["OPTIONS"], "prepare_threshold", raising=False)
    assert not pipelines()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan cache")
@pytest.mark.parametrize("prepared", [True, False])
def test_prepared_statements_are_planned_once(prepared):
    """A new connection plans its prepared statements once (plan_prepared_once), with a
    SET, not a startup option a pooler would refuse; unprepared, it leaves the default."""
    other = connection.copy()
    options = other.settings_dict["OPTIONS"]
    options.pop("prepare_threshold", None)
    if prepared:  # as settings.py sets it, unless DJANGO_DB_PREPARE=0
        options["prepare_threshold"] = 0
    try:
        with other.cursor() as cursor:
            cursor.execute("SHOW plan_cache_mode")
            assert cursor.fetchone() == ("force_generic_plan" if prepared else "auto",)
        assert "plan_cache_mode" not in str(other.get_connection_params().get("options", ""))
    finally:
        other.close()
