"""The memory model: FSRS-6 (the ``fsrs`` package) on StudyApp's 1–5 scale.

Pure functions: a card's scheduling state, a rating and the time go in, the new state
comes out. No ORM and no clock; callers pass ``now``.

The 1–5 rating is stored as given. FSRS takes four grades; ``RATING_TO_FSRS`` is the
one place that maps between them (SM-2's convention: under 3 is a failed recall).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import fsrs

from decks.models import State

RATING_TO_FSRS: dict[int, fsrs.Rating] = {
    1: fsrs.Rating.Again,  # Not at all
    2: fsrs.Rating.Again,  # recalled only after seeing the answer: still a failed recall
    3: fsrs.Rating.Hard,
    4: fsrs.Rating.Good,
    5: fsrs.Rating.Easy,  # Perfectly
}

# Learning cards due within this window are shown when nothing else is left.
LEARN_AHEAD = timedelta(minutes=20)


class InvalidRating(ValueError):
    def __init__(self, rating: object):
        super().__init__(f"A rating must be a whole number from 1 to 5, not {rating!r}.")


@dataclass(frozen=True)
class CardState:
    state: int = State.NEW
    step: int | None = None
    due: datetime | None = None
    stability: float | None = None
    difficulty: float | None = None
    last_review: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    after: CardState
    retrievability: float | None  # predicted recall at review time; None for a new card
    scheduled_days: float  # from the review to the next due, in days


def validate_rating(rating: object) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise InvalidRating(rating)
    return rating


@lru_cache(maxsize=256)
def _scheduler(
    desired_retention: float, parameters: tuple[float, ...] | None, fuzz: bool
) -> fsrs.Scheduler:
    if parameters is None:
        return fsrs.Scheduler(desired_retention=desired_retention, enable_fuzzing=fuzz)
    return fsrs.Scheduler(
        parameters=parameters, desired_retention=desired_retention, enable_fuzzing=fuzz
    )


def get_scheduler(
    desired_retention: float = 0.9,
    parameters: Sequence[float] | None = None,
    fuzz: bool = True,
) -> fsrs.Scheduler:
    return _scheduler(
        float(desired_retention), tuple(parameters) if parameters else None, bool(fuzz)
    )


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _to_fsrs(card: CardState, now: datetime) -> fsrs.Card:
    if card.state == State.NEW:
        # fsrs has no "new" state: a fresh fsrs.Card is a learning card at step 0.
        return fsrs.Card(card_id=0, state=fsrs.State.Learning, step=0, due=now)
    return fsrs.Card(
        card_id=0,
        state=fsrs.State(card.state),
        step=card.step,
        stability=card.stability,
        difficulty=card.difficulty,
        due=_utc(card.due),
        last_review=_utc(card.last_review),
    )


def retrievability(card: CardState, now: datetime, scheduler: fsrs.Scheduler) -> float | None:
    """Predicted probability of recalling the card at ``now``; None if never reviewed.

    fsrs.Scheduler.get_card_retrievability's formula, R = (1 + FACTOR * days / S) ** DECAY
    over whole elapsed days, without building an fsrs.Card: replaying a long history
    calls this once per review."""
    if card.state == State.NEW:
        return None
    return recall(card.last_review, card.stability, now, scheduler)


def recall(
    last_review: datetime | None, stability: float | None, now: datetime,
    scheduler: fsrs.Scheduler,
) -> float | None:  # fmt: skip
    """retrievability() from the two values it depends on."""
    if last_review is None or stability is None:
        return None
    days = max(0, (now - last_review).days)
    return (1 + scheduler._FACTOR * days / stability) ** scheduler._DECAY


def review(card: CardState, rating: int, now: datetime, scheduler: fsrs.Scheduler) -> Outcome:
    rating = validate_rating(rating)
    now = _utc(now)
    new, _log = scheduler.review_card(_to_fsrs(card, now), RATING_TO_FSRS[rating], now)
    after = CardState(
        state=int(new.state),
        step=new.step,
        due=new.due,
        stability=new.stability,
        difficulty=new.difficulty,
        last_review=now,
    )
    return Outcome(
        after=after,
        retrievability=retrievability(card, now, scheduler),
        scheduled_days=(new.due - now).total_seconds() / 86400,
    )


def review_fsrs(
    card: fsrs.Card | None, rating: int, now: datetime, scheduler: fsrs.Scheduler
) -> fsrs.Card:
    """review() on fsrs's own card type, for replaying long histories (an imported Anki
    log): each review's card goes straight into the next, with no conversions. None is a
    new card; ``now`` must be UTC; the rating is one of 1–5, already validated."""
    if card is None:
        card = fsrs.Card(card_id=0, state=fsrs.State.Learning, step=0, due=now)
    return scheduler.review_card(card, RATING_TO_FSRS[rating], now)[0]


def to_fsrs(card: CardState, now: datetime) -> fsrs.Card | None:
    """A stored state as review_fsrs takes it (None for a new card)."""
    return None if card.state == State.NEW else _to_fsrs(card, now)


def preview(card: CardState, now: datetime, scheduler: fsrs.Scheduler) -> dict[int, timedelta]:
    """The interval each rating 1–5 would schedule, for the rating buttons: review()'s
    due date, with one FSRS review per grade (1 and 2 are both Again) from one card."""
    now = _utc(now)
    start = _to_fsrs(card, now)
    intervals = {
        grade: scheduler.review_card(start, grade, now)[0].due - now
        for grade in set(RATING_TO_FSRS.values())
    }
    return {rating: intervals[grade] for rating, grade in RATING_TO_FSRS.items()}


def format_interval(interval: timedelta) -> str:
    """Short human interval as on the rating buttons: 1m, 10m, 5h, 3d, 2.1mo, 1.5y."""
    seconds = max(interval.total_seconds(), 0)
    minutes = seconds / 60
    if minutes < 60:
        return f"{max(round(minutes), 1)}m"
    hours = minutes / 60
    if hours < 24:
        return f"{round(hours)}h"
    days = hours / 24
    if days < 30:
        return f"{round(days)}d"
    if days < 365:
        return f"{days / 30.4:.1f}mo".replace(".0mo", "mo")
    return f"{days / 365:.1f}y".replace(".0y", "y")
