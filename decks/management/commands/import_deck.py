from __future__ import annotations

import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from decks.apkg import PackageError
from decks.importers import FORMATS, DeckFormatError
from decks.services import import_upload


class Command(BaseCommand):
    help = (
        "Import a deck file as a new deck: the numbered Q/A text format, CSV or TSV "
        "(front, back, tags), Anki's Notes in Plain Text, a Quizlet export, or an Anki "
        "package (.apkg/.colpkg; with --owner its review history becomes theirs)."
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
            deck, summary = import_upload(
                data,
                format=format,
                title=title,
                owner=owner_user,
                is_public=public,
                now=timezone.now(),
            )
        except (DeckFormatError, PackageError) as error:
            raise CommandError(f"{file}: {error} Nothing was imported.") from None
        self.stdout.write(
            f"{summary} Deck {deck.pk} “{deck.title}” is "
            f"{'public' if deck.is_public else 'private'}. "
            f"Took {time.monotonic() - started:.2f}s."
        )
