"""Sessions in the database (SPEC), read with one hand-written statement that also
reads the signed-in user's row.

Every request of a signed-in student loads its session, then its user: two statements,
each built by the ORM, which on this class of machine costs several times the lookup
itself (see BENCHMARKS.md). Here the session row (decks.models.UserSession) carries the
user's id, so one statement reads both; studyapp.backends.UserBackend takes the user
from there instead of reading it again. Django still checks the session's expiry and
its auth hash, and the backend whether the user may sign in. Writing, expiry and
everything else are Django's own.
"""

from __future__ import annotations

from contextvars import ContextVar

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends import db
from django.utils import timezone

from decks import rawsql
from decks.rawsql import db_datetime, prepared_cursor

# The user row read with the session in this thread's current request, if any. Set (or
# reset) by every session read; taken, once, by the backend's lookup of the same user.
_user_read_with_session: ContextVar = ContextVar("user_read_with_session", default=None)


def take_user_read_with_session(user_id):
    """The user row the session read brought, if it is ``user_id``'s; it is taken, so
    a later lookup reads the database again."""
    user = _user_read_with_session.get()
    _user_read_with_session.set(None)
    if user is not None and str(user.pk) == str(user_id):
        return user
    return None


class SessionStore(db.SessionStore):
    @classmethod
    def get_model_class(cls):
        from decks.models import UserSession

        return UserSession

    def create_model_instance(self, data):
        session = super().create_model_instance(data)
        user_id = data.get(SESSION_KEY)
        session.user_id = int(user_id) if str(user_id).isdigit() else None
        return session

    def _get_session_from_db(self):
        user_model = get_user_model()
        _user_read_with_session.set(None)
        with prepared_cursor() as cursor:
            cursor.execute(
                f"SELECT s.session_data, {rawsql.columns(user_model, 'u')}"
                f" FROM {self.model._meta.db_table} s"
                f" LEFT JOIN {user_model._meta.db_table} u ON u.id = s.user_id"
                " WHERE s.session_key = %s AND s.expire_date > %s",
                [self.session_key, db_datetime(timezone.now())],
            )
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        if row[1] is not None:
            _user_read_with_session.set(rawsql.instance(user_model, row[1:]))
        return self.model(session_key=self.session_key, session_data=row[0])
