"""The session store and auth backend that read in raw SQL (studyapp.sessions,
studyapp.backends) keep Django's rules: expired sessions and inactive or deleted users
are not signed in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

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
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
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
