"""The session store and auth backend that read in raw SQL (studyapp.sessions,
studyapp.backends) keep Django's rules: expired sessions and inactive or deleted users
are not signed in; the session read brings the user's row, so a signed-in request does
not look the user up again."""

from __future__ import annotations

import importlib
import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from decks.models import UserSession
from studyapp.sessions import SessionStore, take_user_read_with_session
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def _signed_in(client) -> bool:
    return client.get(reverse("home")).status_code == 200


def test_logging_in_through_the_form_signs_the_student_in(client):
    make_user("carol")
    assert not _signed_in(client)
    response = client.post(reverse("login"), {"username": "carol", "password": "pw-carol"})
    assert response.status_code == 302
    assert _signed_in(client)
    client.post(reverse("logout"))
    assert not _signed_in(client)


def test_an_expired_session_is_not_signed_in(student_client):
    assert _signed_in(student_client)
    UserSession.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert not _signed_in(student_client)


def test_an_inactive_or_deleted_user_is_signed_out(student_client, student):
    student.is_active = False
    student.save()
    assert not _signed_in(student_client)
    student.is_active = True
    student.save()
    assert _signed_in(student_client)
    student.delete()
    assert not _signed_in(student_client)


def test_the_signed_in_user_is_the_full_user(student_client, student):
    student.first_name = "Alice"
    student.save()
    response = student_client.get(reverse("home"))
    user = response.wsgi_request.user
    assert (user.pk, user.username, user.first_name, user.is_staff) == (
        student.pk, "alice", "Alice", False,
    )  # fmt: skip
    assert user.date_joined == student.date_joined


def test_the_session_row_names_its_user_from_login_to_logout(client):
    carol = make_user("carol")
    client.post(reverse("login"), {"username": "carol", "password": "pw-carol"})
    session = UserSession.objects.get(session_key=client.cookies["sessionid"].value)
    assert session.user_id == carol.pk
    client.post(reverse("logout"))
    assert not UserSession.objects.filter(user=carol).exists()


def test_session_and_user_are_read_in_one_statement(student_client, student):
    with CaptureQueriesContext(connection) as queries:
        response = student_client.get(reverse("home"))
        assert response.wsgi_request.user.pk == student.pk
    sql = [q["sql"] for q in queries]
    assert not [s for s in sql if re.search(r'FROM "?auth_user"?( u)? WHERE', s)]
    assert [s for s in sql if "usersession" in s.lower() and "u.password" in s]


def test_the_user_read_with_the_session_is_taken_once_and_only_by_its_user(student):
    store = SessionStore()
    store[SESSION_KEY] = str(student.pk)
    store.create()
    SessionStore(store.session_key).load()
    assert take_user_read_with_session(student.pk + 1) is None  # another user: not given
    SessionStore(store.session_key).load()
    assert take_user_read_with_session(student.pk).username == student.username
    assert take_user_read_with_session(student.pk) is None  # taken: read again next time
    SessionStore("no-such-session-key-0123456789abcdef").load()
    assert take_user_read_with_session(student.pk) is None


def test_a_session_without_its_user_row_still_signs_in(student_client, student):
    """Sessions saved before the user column existed, or whose column was cleared, fall
    back to looking the user up."""
    UserSession.objects.update(user=None)
    response = student_client.get(reverse("home"))
    assert response.status_code == 200
    assert response.wsgi_request.user.pk == student.pk


def test_the_upgrade_keeps_signed_in_students_signed_in(student):
    """Migration 0005 moves Django's unexpired sessions to the new table, with their user."""
    migration = importlib.import_module("decks.migrations.0005_user_session")
    UserSession.objects.all().delete()
    data = SessionStore().encode({SESSION_KEY: str(student.pk)})
    later = timezone.now() + timedelta(days=1)
    Session.objects.create(session_key="a" * 32, session_data=data, expire_date=later)
    Session.objects.create(
        session_key="b" * 32, session_data=data, expire_date=timezone.now() - timedelta(days=1)
    )
    Session.objects.create(
        session_key="c" * 32, session_data=SessionStore().encode({}), expire_date=later
    )
    migration.keep_signed_in(apps, None)
    moved = dict(UserSession.objects.values_list("session_key", "user_id"))
    assert moved == {"a" * 32: student.pk, "c" * 32: None}
    assert SessionStore("a" * 32).load() == {SESSION_KEY: str(student.pk)}
