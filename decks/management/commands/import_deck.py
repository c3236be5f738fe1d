from __future__ import annotations

import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from decks.importers import FORMATS, DeckFormatError
from decks.services import import_deck_file


class Command(BaseCommand):
    help = (
        "Import a deck file as a new deck: the numbered Q/A text format, CSV or TSV "
        "(front, back, tags), Anki's Notes in Plain Text, or a Quizlet export."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--title", help="Deck title (default: the file's title line).")
        parser.add_argument(
            "--format", choices=FORMATS, help="The file's format (default: detected)."
        )
        parser.add_argument("--owner", help="Username of the owner (default: admin-owned).")
        parser.add_argument(
            "--public", action="store_true", help="Every student may study the deck."
        )

    def handle(self, *args, file: Path, title: str | None, owner: str | None, public: bool,
               format: str | None, **options) -> None:  # fmt: skip
        started = time.monotonic()
        owner_user = None
        if owner:
            try:
                owner_user = get_user_model().objects.get(username=owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {owner!r}.") from None
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}.") from None
        try:
            deck, parsed = import_deck_file(
                data, format=format, title=title, owner=owner_user, is_public=public
            )
        except DeckFormatError as error:
            raise CommandError(f"{file}: {error} Nothing was imported.") from None
        for skipped in parsed.skipped:
            self.stdout.write(
                f"Skipped card {skipped.number} (line {skipped.line}): {skipped.reason}"
            )
        self.stdout.write(
            f"Imported {len(parsed.cards)} cards into deck {deck.pk} “{deck.title}”"
            f" ({'public' if deck.is_public else 'private'}), skipped {len(parsed.skipped)},"
            f" in {time.monotonic() - started:.2f}s."
        )
