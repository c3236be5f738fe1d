"""Small helpers for the study step's hand-written SQL (see decks.queue and decks.services).

The step runs a handful of statements per rating; on this class of machine Django takes
about 0.5 ms just to compile one queryset, several times what SQLite needs to run it, so
the hot path sends fixed SQL through the cursor. These helpers keep the values the same
as the ORM's on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.utils.dateparse import parse_datetime


def db_datetime(value: datetime | None):
    """A datetime as the ORM would store it (naive UTC text on SQLite)."""
    if value is None:
        return None
    return connection.ops.adapt_datetimefield_value(value)


def py_datetime(value) -> datetime | None:
    """A datetime column's value as an aware UTC datetime, whatever the backend returned."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = parse_datetime(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def for_update() -> str:
    return " FOR UPDATE" if connection.features.has_select_for_update else ""
