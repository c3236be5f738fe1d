"""Saving an Anki package (read by decks.apkg) as decks, cards and, for an owner, history.

One transaction: a bad package saves nothing. Each Anki deck becomes a deck; notes keep
their guid on the card so a second import of the same package updates cards in place.
With an owner, Anki's review log becomes their Review rows, replayed in order through our
scheduler, so every row holds what our model predicted at that moment, as a live review
would; each card's progress is the result of the replay.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsrs
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from decks import scheduler
from decks.apkg import ApkgPackage, ApkgReview
from decks.models import (
    PROGRESS_STATE_FIELDS,
    Card,
    CardProgress,
    Deck,
    Review,
    State,
    StudySettings,
)
from decks.rawsql import datetime_adapter, insert_reviews, insert_rows

# Anki's four answer buttons on our 1–5 scale: Again, Hard, Good, Easy.
EASE_TO_RATING = {1: 1, 2: 3, 3: 4, 4: 5}
# revlog.type: 0 learning, 1 review, 2 relearning are answers; 3 filtered (cramming),
# 4 manual ("set due date", forget) and 5 rescheduled are not reviews of the student.
ANSWER_KINDS = {0, 1, 2}
BATCH = 50_000  # review rows per insert: bounded memory for a million-review history
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


@dataclass
class AnkiImport:
    decks: list[Deck] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    reviews: int = 0
    skipped_reviews: int = 0
    media: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"Imported {self.created} new and updated {self.updated} existing cards "
            f"in {len(self.decks)} deck{'s' if len(self.decks) != 1 else ''}"
        )
        if self.media:
            text += f", {self.media} image{'s' if self.media != 1 else ''}"
        if self.reviews or self.skipped_reviews:
            text += (
                f"; {self.reviews} reviews replayed into your history, "
                f"{self.skipped_reviews} log entries skipped (not reviews: manual "
                "reschedules, cramming, or already imported)"
            )
        return text + "."


def _save_media(package: ApkgPackage) -> dict[str, str]:
    """Store each referenced image once (named by content hash); old name -> URL."""
    urls = {}
    for name, data in package.media.items():
        extension = posixpath.splitext(name)[1].lower()[:10]
        stored = f"anki/{hashlib.sha256(data).hexdigest()[:32]}{extension}"
        if not default_storage.exists(stored):
            default_storage.save(stored, ContentFile(data))
        urls[name] = default_storage.url(stored)
    return urls


def _rewrite_images(text: str, urls: dict[str, str]) -> str:
    return IMAGE.sub(lambda m: f"![{m.group(1)}]({urls.get(m.group(2), m.group(2))})", text)


@transaction.atomic
def import_package(
    package: ApkgPackage, *, owner=None, title: str | None = None, is_public: bool = False,
    now: datetime,
) -> AnkiImport:  # fmt: skip
    result = AnkiImport()
    urls = _save_media(package)
    result.media = len(urls)
    by_deck: dict[str, list] = defaultdict(list)
    for card in package.cards:
        by_deck[card.deck_name].append(card)
    single = len(by_deck) == 1
    ours: dict[int, Card] = {}  # Anki card id -> our card
    suspended: set[int] = set()
    for deck_name, cards in by_deck.items():
        name = (title if title and single else deck_name.replace("\x1f", "::"))[:200]
        deck, _ = Deck.objects.get_or_create(
            title=name, owner=owner, defaults={"is_public": is_public}
        )
        result.decks.append(deck)
        existing = {(c.anki_guid, c.anki_ord): c for c in deck.cards.exclude(anki_guid="")}
        next_position = (deck.cards.order_by("-position").values_list("position", flat=True)
                         .first() or 0) + 1  # fmt: skip
        new_cards, changed = [], []
        for anki in sorted(cards, key=lambda c: c.position):
            front = _rewrite_images(anki.front, urls)
            back = _rewrite_images(anki.back, urls)
            card = existing.get((anki.note_guid, anki.ord))
            if card is None:
                card = Card(
                    deck=deck, front=front, back=back, tags=anki.tags[:500],
                    position=next_position, anki_guid=anki.note_guid, anki_ord=anki.ord,
                )  # fmt: skip
                next_position += 1
                new_cards.append(card)
            elif (card.front, card.back, card.tags) != (front, back, anki.tags[:500]):
                card.front, card.back, card.tags = front, back, anki.tags[:500]
                changed.append(card)
            ours[anki.anki_card_id] = card
            if anki.suspended:
                suspended.add(anki.anki_card_id)
        _save_cards(deck, new_cards, changed)
        result.created += len(new_cards)
        result.updated += len(changed)
    if owner is not None:
        _replay_history(package.reviews, ours, suspended, owner, result)
    return result


def _save_cards(deck: Deck, new_cards: list[Card], changed: list[Card]) -> None:
    """Insert and update the deck's cards with one executemany each (a 100,000-note
    package would spend seconds in bulk_create's per-instance work), then give the new
    cards their ids."""
    stamp = datetime_adapter()(timezone.now())
    insert_rows(
        Card,
        ["deck_id", "front", "back", "tags", "position", "anki_guid", "anki_ord",
         "created_at", "updated_at"],
        [(deck.pk, c.front, c.back, c.tags, c.position, c.anki_guid, c.anki_ord, stamp, stamp)
         for c in new_cards],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Card._meta.db_table} SET front = %s, back = %s, tags = %s,"
            " updated_at = %s WHERE id = %s",
            [(c.front, c.back, c.tags, stamp, c.pk) for c in changed],
        )
    if new_cards:
        added = deck.cards.filter(position__gte=new_cards[0].position)
        ids = {
            (guid, number): pk
            for pk, guid, number in added.values_list("pk", "anki_guid", "anki_ord")
        }
        for card in new_cards:
            card.pk = ids[card.anki_guid, card.anki_ord]


def _replay_history(
    reviews: list[ApkgReview], ours: dict[int, Card], suspended: set[int], owner,
    result: AnkiImport,
) -> None:  # fmt: skip
    """Turn the package's review log into the owner's Review rows and progress.

    A package may hold a million reviews: each is replayed on fsrs's own card type
    (scheduler.review_fsrs) and written in batches of plain rows, without model instances.
    """
    study_settings = StudySettings.for_user(owner)
    model = scheduler.get_scheduler(
        study_settings.desired_retention, parameters=study_settings.fsrs_parameters, fuzz=False
    )
    adapt = datetime_adapter()
    decks = {card.deck_id for card in ours.values()}
    progress = {p.card_id: p for p in CardProgress.objects.filter(user=owner, deck__in=decks)}
    seen = set(
        Review.objects.filter(user=owner, card__deck__in=decks).values_list(
            "card_id", "reviewed_at"
        )
    )
    card_pks = {anki_id: card.pk for anki_id, card in ours.items()}
    states: dict[int, fsrs.Card | None] = {}  # None: still new
    counts: dict[int, list[int]] = {}  # card id -> [reps, lapses, last rating]
    rows = []
    # tqdm shows progress on a terminal (the import command) and stays silent otherwise.
    for entry in tqdm(reviews, unit=" reviews", disable=None, file=sys.stderr, mininterval=1):
        card_pk = card_pks.get(entry.anki_card_id)
        rating = EASE_TO_RATING.get(entry.ease)
        at = datetime.fromtimestamp(entry.reviewed_at_ms / 1000, tz=UTC)
        if (
            card_pk is None
            or rating is None
            or entry.kind not in ANSWER_KINDS
            or (card_pk, at) in seen
        ):
            result.skipped_reviews += 1
            continue
        if card_pk in states:
            before = states[card_pk]
        else:
            row = progress.get(card_pk)
            before = states[card_pk] = (
                scheduler.to_fsrs(_stored_state(row), at)
                if row and row.state != State.SUSPENDED
                else None
            )
            counts[card_pk] = [row.reps if row else 0, row.lapses if row else 0, None]
        after = scheduler.review_fsrs(before, rating, at, model)
        if before is None:
            state_before, step_before, due_before, stability_before, difficulty_before = (
                State.NEW, None, None, None, None
            )  # fmt: skip
            recalled = None
        else:
            state_before, step_before = int(before.state), before.step
            due_before = adapt(before.due)
            stability_before, difficulty_before = before.stability, before.difficulty
            recalled = scheduler.recall(before.last_review, before.stability, at, model)
        rows.append((
            owner.pk, card_pk, rating, adapt(at), max(entry.duration_ms, 0) or None, recalled,
            state_before, step_before, due_before, stability_before, difficulty_before,
            int(after.state), after.step, adapt(after.due), after.stability, after.difficulty,
            (after.due - at).total_seconds() / 86400,
        ))  # fmt: skip
        if len(rows) == BATCH:
            insert_reviews(rows)
            result.reviews += len(rows)
            rows.clear()
        tally = counts[card_pk]
        tally[0] += 1
        tally[1] += state_before == State.REVIEW and rating <= 2
        tally[2] = rating
        states[card_pk] = after
    insert_reviews(rows)
    result.reviews += len(rows)
    _save_progress(ours, progress, states, counts, suspended, owner, adapt)


def _stored_state(row: CardProgress) -> scheduler.CardState:
    return scheduler.CardState(
        row.state, row.step, row.due, row.stability, row.difficulty, row.last_reviewed_at
    )


def _save_progress(ours, progress, states, counts, suspended, owner, adapt) -> None:
    """Each imported card's progress: the end of its replay, suspended as in Anki."""
    fresh, changed = [], []
    for anki_id, card in ours.items():
        row = progress.get(card.pk)
        if row is None:
            values = [State.NEW, None, None, None, None, 0, 0, None, None]
        else:
            values = [getattr(row, name) for name in PROGRESS_STATE_FIELDS]
            values[2], values[8] = adapt(values[2]), adapt(values[8])  # due, last reviewed
        if card.pk in states:
            after = states[card.pk]
            values[:5] = [int(after.state), after.step, adapt(after.due), after.stability,
                          after.difficulty]  # fmt: skip
            values[5:8] = counts[card.pk]
            values[8] = adapt(after.last_review)
        if anki_id in suspended:
            values[0] = State.SUSPENDED
        elif values[0] == State.SUSPENDED and card.pk not in states:
            values[0] = State.NEW  # unsuspended in Anki since the last import
        if row is None:
            fresh.append([owner.pk, card.pk, card.deck_id, card.position, *values])
        else:
            changed.append([*values, row.pk])
    insert_rows(CardProgress, ["user_id", "card_id", "deck_id", "position", *PROGRESS_STATE_FIELDS],
                fresh)  # fmt: skip
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {CardProgress._meta.db_table} SET "
            + ", ".join(f"{name} = %s" for name in PROGRESS_STATE_FIELDS)
            + " WHERE id = %s",
            changed,
        )
