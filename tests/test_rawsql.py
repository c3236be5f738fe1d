"""decks.rawsql.prepared_cursor: the study step's statements keep Django's guarantees
(its error classes, its broken-transaction check, its query log and execute wrappers)
whether or not anything is watching the queries."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, Error, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from decks.rawsql import prepared_cursor

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
