"""Sessions in the database (SPEC), read with one hand-written statement.

Every request of a signed-in student loads its session; Django's database backend
builds an ORM query for it each time, which on this class of machine costs several
times the lookup itself (see BENCHMARKS.md). Writing, expiry and everything else are
Django's own.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.utils import timezone

from decks.rawsql import db_datetime, prepared_cursor


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        with prepared_cursor() as cursor:
            cursor.execute(
                f"SELECT session_data FROM {self.model._meta.db_table}"
                " WHERE session_key = %s AND expire_date > %s",
                [self.session_key, db_datetime(timezone.now())],
            )
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return self.model(session_key=self.session_key, session_data=row[0])
