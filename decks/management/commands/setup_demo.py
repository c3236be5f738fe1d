from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from decks.importers import decode_upload, parse_seed_text
from decks.models import Deck
from decks.services import import_deck

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "cnn_week2.txt"
DEMO_USERNAME = "student"
DEMO_PASSWORD = "study-demo"


class Command(BaseCommand):
    help = "Import the demo deck and create a demo student, unless they already exist."

    def handle(self, *args, **options) -> None:
        parsed = parse_seed_text(decode_upload(DEMO_FILE.read_bytes()))
        # The demo deck is the admin-owned deck with the file's title.
        deck = Deck.objects.filter(title=parsed.title, owner=None).first()
        if deck is None:
            deck = import_deck(parsed, is_public=True)
            self.stdout.write(f"Imported the demo deck “{deck.title}” ({len(parsed.cards)} cards).")
        else:
            self.stdout.write(f"The demo deck “{deck.title}” is already there.")

        user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        self.stdout.write(
            f"Demo student {'created' if created else 'already exists'}: log in as "
            f"“{DEMO_USERNAME}”, password “{DEMO_PASSWORD}”."
        )
