from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from decks import services
from decks.models import Card, CardProgress, Deck, Review
from tests.conftest import NOW, make_deck

ROOT = Path(__file__).resolve().parents[1]

RATER = """
import sys
from datetime import timedelta
import django
django.setup()
from django.contrib.auth import get_user_model
from decks.models import Card
from decks.services import record_review
from tests.conftest import NOW

user = get_user_model().objects.get(username=sys.argv[1])
cards = Card.objects.filter(deck__title="Shared").order_by("position")
for i, card in enumerate(cards):
    record_review(user, card.pk, 1 + i % 5, NOW + timedelta(seconds=i))
print("done")
"""


def test_two_processes_writing_to_sqlite_at_once_lose_nothing(tmp_path):
    """WAL mode, IMMEDIATE transactions and a busy timeout make concurrent writers wait."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}",
        "DJANGO_DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "studyapp.settings",
        "PYTHONPATH": str(ROOT),
    }
    setup = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from tests.conftest import make_deck, make_user\n"
        "make_deck('Shared', cards=200); make_user('p1'); make_user('p2')\n"
    )
    subprocess.run([sys.executable, "-c", setup], env=env, cwd=ROOT, check=True, timeout=120)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RATER, name], env=env, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for name in ("p1", "p2")
    ]  # fmt: skip
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert out.strip() == "done"
    count = (
        "import django; django.setup()\n"
        "import json\n"
        "from decks.models import Review, CardProgress\n"
        "print(json.dumps([Review.objects.count(),"
        " sorted(set(CardProgress.objects.values_list('reps', flat=True)))]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", count], env=env, cwd=ROOT, check=True, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    reviews, reps = json.loads(result.stdout)
    assert reviews == 400
    assert reps == [1]


@pytest.mark.django_db(transaction=True)
def test_backup_restores_into_an_empty_database(tmp_path, django_user_model):
    """`manage.py dumpdata` / `loaddata` round-trips decks, cards and study history."""
    student = django_user_model.objects.create_user("alice", password="pw")
    deck = make_deck("Backed up", cards=3)
    cards = list(deck.cards.order_by("position"))
    services.record_review(student, cards[0].pk, 4, NOW)
    services.record_review(student, cards[1].pk, 2, NOW)
    services.ensure_progress(student, deck)

    def snapshot():
        return (
            list(Deck.objects.values_list("title", "is_public")),
            list(Card.objects.order_by("pk").values_list("pk", "front", "back", "position")),
            list(Review.objects.order_by("pk").values()),
            list(CardProgress.objects.order_by("pk").values()),
            list(django_user_model.objects.values_list("username", "password")),
        )

    Client().force_login(student)  # a session, which a backup leaves out
    before = snapshot()
    backup = tmp_path / "backup.json"
    call_command(
        "dumpdata", "auth.user", "decks", "--exclude", "decks.usersession",
        "--natural-foreign", "--output", str(backup), verbosity=0,
    )  # fmt: skip
    assert "usersession" not in backup.read_text()
    call_command("flush", "--no-input", verbosity=0)
    assert not Deck.objects.exists()
    call_command("loaddata", str(backup), verbosity=0)
    assert snapshot() == before
