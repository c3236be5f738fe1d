"""Which card a student sees next, and how many are left: the study queue.

Order (SPEC, Scheduler): learning/relearning cards that are due; review cards that are
due, most overdue first, while today's review count is under the limit; new cards in
deck order while today's new count is under the limit; then, if nothing else is left,
a learning card due within the learn-ahead window.

Each function runs a fixed number of index range scans, whatever the deck or history
size: the study step's query budget depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q

from decks.models import CardProgress, Deck, Review, State, StudySettings
from decks.scheduler import LEARN_AHEAD

LEARNING_STATES = (State.LEARNING, State.RELEARNING)


@dataclass(frozen=True)
class DoneToday:
    new: int  # new cards introduced today (all decks)
    reviews: int  # review-state cards rated today (all decks)


@dataclass(frozen=True)
class QueueCounts:
    new: int  # new cards still available today
    learning: int  # learning/relearning cards due now
    due: int  # review cards due now, within today's review limit
    new_limited: bool  # new cards are waiting but today's new-card limit is reached
    reviews_limited: bool  # review cards are due but today's review limit is reached

    @property
    def total(self) -> int:
        return self.new + self.learning + self.due


def done_today(user, study_settings: StudySettings, now: datetime) -> DoneToday:
    counts = Review.objects.filter(
        user=user, reviewed_at__gte=study_settings.day_start(now)
    ).aggregate(
        new=Count("id", filter=Q(state_before=State.NEW)),
        reviews=Count("id", filter=Q(state_before=State.REVIEW)),
    )
    return DoneToday(new=counts["new"], reviews=counts["reviews"])


def _mine(user, deck: Deck):
    return CardProgress.objects.filter(user=user, deck=deck)


def next_card(
    user, deck: Deck, study_settings: StudySettings, now: datetime, done: DoneToday
) -> CardProgress | None:
    """The progress row (with its card) to show next, or None when nothing is left."""
    mine = _mine(user, deck).select_related("card")
    learning = mine.filter(state__in=LEARNING_STATES, due__lte=now).order_by("due", "id")
    if card := learning.first():
        return card
    if done.reviews < study_settings.max_reviews_per_day:
        review = mine.filter(state=State.REVIEW, due__lte=now).order_by("due", "id")
        if card := review.first():
            return card
    if done.new < study_settings.new_per_day:
        new = mine.filter(state=State.NEW).order_by("position", "card_id")
        if card := new.first():
            return card
    ahead = mine.filter(state__in=LEARNING_STATES, due__lte=now + LEARN_AHEAD)
    return ahead.order_by("due", "id").first()


def counts(
    user, deck: Deck, study_settings: StudySettings, now: datetime, done: DoneToday
) -> QueueCounts:
    """What is left to study in the deck now. Counts stop at the day's limits, so the
    cost is bounded by the limits, not by the deck size."""
    mine = _mine(user, deck)
    new_left = max(study_settings.new_per_day - done.new, 0)
    reviews_left = max(study_settings.max_reviews_per_day - done.reviews, 0)
    # Slicing before count() makes it a COUNT over a LIMIT subquery.
    new = mine.filter(state=State.NEW)[: new_left + 1].count()
    due = mine.filter(state=State.REVIEW, due__lte=now)[: reviews_left + 1].count()
    learning = mine.filter(state__in=LEARNING_STATES, due__lte=now).count()
    return QueueCounts(
        new=min(new, new_left),
        learning=learning,
        due=min(due, reviews_left),
        new_limited=new > new_left,
        reviews_limited=due > reviews_left,
    )


def next_due(user, deck: Deck) -> datetime | None:
    """When the next learning or review card in the deck falls due."""
    return (
        _mine(user, deck)
        .filter(state__in=(State.LEARNING, State.REVIEW, State.RELEARNING))
        .aggregate(next=Min("due"))["next"]
    )
