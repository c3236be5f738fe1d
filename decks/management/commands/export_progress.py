from __future__ import annotations

import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from decks.exporters import cards_csv, review_csv
from decks.models import Card, CardProgress, Deck, Review
from decks.rawsql import stream_rows


class Command(BaseCommand):
    help = "Export students' progress as CSV: one row per review, or one per (student, card)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", help="Only this student (username).")
        parser.add_argument("--deck", type=int, help="Only this deck (id).")
        parser.add_argument("--kind", choices=["reviews", "cards"], default="reviews")
        parser.add_argument("--out", type=Path, help="File to write (default: standard output).")

    def handle(self, *args, user: str | None, deck: int | None, kind: str, out: Path | None,
               **options) -> None:  # fmt: skip
        started = time.monotonic()
        model = Review if kind == "reviews" else CardProgress
        rows = model.objects.all()
        students = get_user_model().objects.all()
        cards = Card.objects.all()
        if user:
            students = students.filter(username=user)
            if not students.exists():
                raise CommandError(f"No user named {user!r}.")
            rows = rows.filter(user__in=students)
        if deck is not None:
            if not Deck.objects.filter(pk=deck).exists():
                raise CommandError(f"No deck with id {deck}.")
            rows = rows.filter(**{"card__deck_id" if kind == "reviews" else "deck_id": deck})
            cards = cards.filter(deck_id=deck)
        total = rows.count()
        # tqdm counts rows as they are read, and is silent when stderr is not a terminal.
        counted = tqdm(
            stream_rows(rows.for_export()), total=total, unit=" rows", disable=None,
            file=sys.stderr,
        )  # fmt: skip
        if kind == "reviews":
            pieces = review_csv(
                counted,
                dict(students.values_list("id", "username")),
                stream_rows(cards.values_list("id", "deck__title", "front")),
            )
        else:
            pieces = cards_csv(counted, timezone.now())
        target = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
        try:
            for piece in pieces:
                target.write(piece)
        finally:
            if out:
                target.close()
        self.stderr.write(
            f"Exported {total} {kind} rows to {out or 'standard output'}"
            f" in {time.monotonic() - started:.1f}s."
        )
