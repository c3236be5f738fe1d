"""Django's ModelBackend, with the per-request user lookup written by hand.

AuthenticationMiddleware loads the signed-in user on every request; the ORM's query
building costs more than the lookup itself here (see BENCHMARKS.md). The session read
(studyapp.sessions) usually brings the user's row along, and then there is no lookup
at all. Logging in, permissions and the rest are ModelBackend's own.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from decks import rawsql
from studyapp.sessions import take_user_read_with_session


class UserBackend(ModelBackend):
    def get_user(self, user_id):
        user = take_user_read_with_session(user_id)
        if user is None:
            model = get_user_model()
            with rawsql.prepared_cursor() as cursor:
                cursor.execute(
                    f"SELECT {rawsql.columns(model, 'u')} FROM {model._meta.db_table} u"
                    " WHERE u.id = %s",
                    [user_id],
                )
                row = cursor.fetchone()
            if row is None:
                return None
            user = rawsql.instance(model, row)
        return user if self.user_can_authenticate(user) else None
