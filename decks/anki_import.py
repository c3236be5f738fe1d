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

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from tqdm import tqdm

from decks import scheduler
from decks.apkg import ApkgPackage, ApkgReview
from decks.models import Card, CardProgress, Deck, Review, State, StudySettings
from decks.rawsql import insert_reviews, review_values

# Anki's four answer buttons on our 1–5 scale: Again, Hard, Good, Easy.
EASE_TO_RATING = {1: 1, 2: 3, 3: 4, 4: 5}
# revlog.type: 0 learning, 1 review, 2 relearning are answers; 3 filtered (cramming),
# 4 manual ("set due date", forget) and 5 rescheduled are not reviews of the student.
ANSWER_KINDS = {0, 1, 2}
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
        Card.objects.bulk_create(new_cards, batch_size=2000)
        Card.objects.bulk_update(changed, ["front", "back", "tags"], batch_size=2000)
        result.created += len(new_cards)
        result.updated += len(changed)
    if owner is not None:
        _replay_history(package.reviews, ours, suspended, owner, result)
    return result


def _replay_history(
    reviews: list[ApkgReview], ours: dict[int, Card], suspended: set[int], owner,
    result: AnkiImport,
) -> None:  # fmt: skip
    """Turn the package's review log into the owner's Review rows and progress."""
    fsrs = scheduler.get_scheduler(
        StudySettings.for_user(owner).desired_retention,
        parameters=StudySettings.for_user(owner).fsrs_parameters,
        fuzz=False,
    )
    decks = {card.deck_id for card in ours.values()}
    progress = {p.card_id: p for p in CardProgress.objects.filter(user=owner, deck__in=decks)}
    seen = set(
        Review.objects.filter(user=owner, card__deck__in=decks).values_list(
            "card_id", "reviewed_at"
        )
    )
    card_pks = {anki_id: card.pk for anki_id, card in ours.items()}
    states: dict[int, scheduler.CardState] = {}
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
        if card_pk not in states:
            row = progress.get(card_pk)
            states[card_pk] = (
                scheduler.CardState(row.state, row.step, row.due, row.stability,
                                    row.difficulty, row.last_reviewed_at)
                if row and row.state not in (State.NEW, State.SUSPENDED)
                else scheduler.CardState()
            )  # fmt: skip
            counts[card_pk] = [row.reps if row else 0, row.lapses if row else 0, None]
        before = states[card_pk]
        outcome = scheduler.review(before, rating, at, fsrs)
        after = outcome.after
        rows.append(
            review_values(
                user_id=owner.pk, card_id=card_pk, rating=rating, reviewed_at=at,
                time_taken_ms=max(entry.duration_ms, 0) or None,
                retrievability=outcome.retrievability, state_before=before.state,
                step_before=before.step, due_before=before.due,
                stability_before=before.stability, difficulty_before=before.difficulty,
                state_after=after.state, step_after=after.step, due_after=after.due,
                stability_after=after.stability, difficulty_after=after.difficulty,
                scheduled_days=outcome.scheduled_days,
            )
        )  # fmt: skip
        tally = counts[card_pk]
        tally[0] += 1
        tally[1] += before.state == State.REVIEW and rating <= 2
        tally[2] = rating
        states[card_pk] = after
    insert_reviews(rows)
    result.reviews = len(rows)

    fresh, changed = [], []
    for anki_id, card in ours.items():
        row = progress.get(card.pk)
        if row is None:
            row = CardProgress(user=owner, card_id=card.pk, deck_id=card.deck_id,
                               position=card.position)  # fmt: skip
            fresh.append(row)
        else:
            changed.append(row)
        state = states.get(card.pk)
        if state is not None:
            row.state, row.step, row.due = state.state, state.step, state.due
            row.stability, row.difficulty = state.stability, state.difficulty
            row.reps, row.lapses, row.last_rating = counts[card.pk]
            row.last_reviewed_at = state.last_review
        if anki_id in suspended:
            row.state = State.SUSPENDED
        elif row.state == State.SUSPENDED and state is None:
            row.state = State.NEW  # unsuspended in Anki since the last import
    CardProgress.objects.bulk_create(fresh, batch_size=5000)
    CardProgress.objects.bulk_update(
        changed,
        ["state", "step", "due", "stability", "difficulty", "reps", "lapses", "last_rating",
         "last_reviewed_at"],
        batch_size=2000,
    )  # fmt: skip
