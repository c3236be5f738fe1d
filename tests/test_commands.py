from __future__ import annotations

import importlib
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection

from decks.models import Card, Deck

SEED = Path(__file__).resolve().parents[1] / "decks" / "demo" / "cnn_week2.txt"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_import_seed_gives_twelve_cards_in_order_and_reports_the_empty_one(db):
    output = run("import_deck", str(SEED))
    deck = Deck.objects.get()
    cards = list(deck.cards.order_by("position"))
    assert deck.title == "week 2 - CNN's Flashcards"
    assert len(cards) == 12
    assert cards[0].front == "what is a CNN convolutional layer"
    assert len(cards[7].back.split("\n\n")) == 6
    assert len(cards[11].back.split("\n\n")) == 4
    assert "“convolves”" in cards[0].back
    assert "Skipped card 13 (line 247)" in output
    assert "Imported 12 cards" in output and "is private" in output
    assert not deck.is_public and deck.owner is None


def test_import_with_title_owner_and_public(db):
    owner = get_user_model().objects.create_user("owner")
    run("import_deck", str(SEED), "--title", "CNN", "--owner", "owner", "--public")
    deck = Deck.objects.get()
    assert (deck.title, deck.owner, deck.is_public) == ("CNN", owner, True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"Title\n\n1\nQ\n\nquestion\n\nHow well did you know this?\n", "Line"),
        (b"Title\n\n1\nQ\n\nquestion without an answer", "Line"),
        (b"Title\n\x00\x01binary\xff", "Line"),
        ("Title\n\n1\nQ\n\ncaf\u00e9\n\nA\n\nx\n".encode("latin-1"), "Line 6"),
    ],
    ids=["empty", "q-without-a", "truncated", "binary", "latin-1"],
)
def test_malformed_file_is_refused_and_saves_nothing(db, tmp_path, content, message):
    existing = Deck.objects.create(title="Already here")
    Card.objects.create(deck=existing, front="f", back="b")
    path = tmp_path / "deck.txt"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message) as error:
        run("import_deck", str(path))
    assert "Nothing was imported" in str(error.value)
    assert (Deck.objects.count(), Card.objects.count()) == (1, 1)


def test_import_of_missing_file_or_owner_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        run("import_deck", str(tmp_path / "nope.txt"))
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("import_deck", str(SEED), "--owner", "ghost")
    assert not Deck.objects.exists()


def test_setup_demo_is_idempotent(db):
    first = run("setup_demo")
    second = run("setup_demo")
    assert "Imported the demo deck" in first
    assert "already there" in second
    assert "“student”" in second and "“study-demo”" in second
    assert Deck.objects.count() == 1
    assert Deck.objects.get().is_public
    assert Card.objects.count() == 12
    assert get_user_model().objects.filter(username="student").count() == 1
    assert get_user_model().objects.get(username="student").check_password("study-demo")


def test_migrate_makes_the_database_caches_table(db):
    """migrate alone must leave a working cache (the stats page and the class dashboard
    keep their figures there): Django's migrate does not make its table."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {settings.CACHES['default']['LOCATION']}")
    migration = importlib.import_module("decks.migrations.0007_cache_table")
    migration.create_cache_table(None, SimpleNamespace(connection=connection))
    cache.set("figures", [1, 2])
    assert cache.get("figures") == [1, 2]
