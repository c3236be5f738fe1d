from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model

from decks.models import Card, Deck

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, **extra
    )


def make_deck(title: str = "Deck", *, cards: int = 3, owner=None, is_public: bool = True) -> Deck:
    deck = Deck.objects.create(title=title, owner=owner, is_public=is_public)
    Card.objects.bulk_create(
        Card(deck=deck, front=f"Question {i}", back=f"Answer {i}", position=i)
        for i in range(1, cards + 1)
    )
    return deck


@pytest.fixture
def student(db):
    return make_user("alice")


@pytest.fixture
def other_student(db):
    return make_user("bob")


@pytest.fixture
def staff(db):
    return make_user("teacher", is_staff=True, is_superuser=True)


@pytest.fixture
def deck(db) -> Deck:
    return make_deck("Public deck", cards=3)


@pytest.fixture
def student_client(client, student):
    client.force_login(student)
    return client
