from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decks import scheduler
from decks.models import State
from decks.scheduler import CardState, format_interval, get_scheduler, preview, review
from tests.conftest import NOW

SCHED = get_scheduler(0.9, fuzz=False)


def test_rating_map_treats_1_and_2_as_failed_recall():
    assert scheduler.RATING_TO_FSRS[1] == scheduler.RATING_TO_FSRS[2]
    assert [scheduler.RATING_TO_FSRS[r].name for r in range(1, 6)] == [
        "Again", "Again", "Hard", "Good", "Easy",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", [0, 6, -1, "3", 3.0, None, True])
def test_rating_outside_1_to_5_is_refused(bad):
    with pytest.raises(scheduler.InvalidRating, match="1 to 5"):
        review(CardState(), bad, NOW, SCHED)


def test_first_review_of_a_new_card_starts_learning():
    outcome = review(CardState(), 1, NOW, SCHED)
    assert outcome.after.state == State.LEARNING
    assert outcome.after.due == NOW + timedelta(minutes=1)
    assert outcome.retrievability is None
    assert outcome.after.last_review == NOW


def test_perfect_first_review_graduates_to_review_in_days():
    outcome = review(CardState(), 5, NOW, SCHED)
    assert outcome.after.state == State.REVIEW
    assert outcome.scheduled_days >= 1


def test_preview_gives_one_interval_per_rating_and_never_shortens():
    intervals = preview(CardState(), NOW, SCHED)
    assert list(intervals) == [1, 2, 3, 4, 5]
    assert intervals[1] == intervals[2]
    assert [format_interval(intervals[r]) for r in (1, 4)] == ["1m", "10m"]
    values = list(intervals.values())
    assert values == sorted(values)


def test_desired_retention_changes_intervals():
    card = review(CardState(), 4, NOW, SCHED).after
    card = review(card, 4, card.due, SCHED).after
    later = card.due + timedelta(days=3)
    strict = review(card, 4, later, get_scheduler(0.97, fuzz=False)).scheduled_days
    relaxed = review(card, 4, later, get_scheduler(0.75, fuzz=False)).scheduled_days
    assert strict < relaxed


def test_retrievability_falls_with_time():
    card = review(CardState(), 5, NOW, SCHED).after
    soon = scheduler.retrievability(card, NOW + timedelta(days=1), SCHED)
    late = scheduler.retrievability(card, NOW + timedelta(days=60), SCHED)
    assert 0 < late < soon <= 1
    assert scheduler.retrievability(CardState(), NOW, SCHED) is None


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(seconds=20), "1m"),
        (timedelta(minutes=10), "10m"),
        (timedelta(hours=5), "5h"),
        (timedelta(days=3), "3d"),
        (timedelta(days=64), "2.1mo"),
        (timedelta(days=400), "1.1y"),
    ],
)
def test_format_interval(interval, text):
    assert format_interval(interval) == text


ratings = st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=25)
gaps = st.lists(st.integers(min_value=0, max_value=60 * 24 * 90), min_size=25, max_size=25)


def _walk(sequence: list[int], minutes: list[int]) -> list[tuple[CardState, CardState, object]]:
    steps, card, now = [], CardState(), NOW
    for rating, gap in zip(sequence, minutes, strict=False):
        outcome = review(card, rating, now, SCHED)
        steps.append((card, outcome.after, now))
        card = outcome.after
        now = max(now + timedelta(minutes=gap), card.due - timedelta(days=1))
    return steps


@settings(max_examples=150, deadline=None)
@given(ratings, gaps)
def test_next_due_is_never_before_the_review(sequence, minutes):
    for _before, after, reviewed_at in _walk(sequence, minutes):
        assert after.due >= reviewed_at


@settings(max_examples=150, deadline=None)
@given(ratings, gaps)
def test_higher_rating_never_gives_shorter_interval(sequence, minutes):
    for before, _after, reviewed_at in _walk(sequence, minutes):
        intervals = preview(before, reviewed_at, SCHED)
        assert [intervals[r] for r in range(1, 6)] == sorted(intervals.values())


@settings(max_examples=60, deadline=None)
@given(ratings, gaps)
def test_preview_shows_what_each_rating_would_schedule(sequence, minutes):
    for before, _after, reviewed_at in _walk(sequence, minutes):
        intervals = preview(before, reviewed_at, SCHED)
        for rating in range(1, 6):
            due = review(before, rating, reviewed_at, SCHED).after.due
            assert intervals[rating] == due - reviewed_at


def test_retrievability_matches_fsrs():
    card = review(review(CardState(), 4, NOW, SCHED).after, 4, NOW + timedelta(days=1), SCHED)
    memory = card.after
    for days in (0, 1, 7, 40, 400):
        at = NOW + timedelta(days=days, hours=5)
        expected = SCHED.get_card_retrievability(scheduler._to_fsrs(memory, at), at)
        assert scheduler.retrievability(memory, at, SCHED) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(ratings, gaps)
def test_replaying_on_fsrs_cards_matches_review(sequence, minutes):
    """The Anki import's fast path (review_fsrs, recall) gives what review() gives live."""
    fast = None
    steps = _walk(sequence, minutes)
    for rating, (before, after, reviewed_at) in zip(sequence, steps, strict=True):
        recalled = fast and scheduler.recall(fast.last_review, fast.stability, reviewed_at, SCHED)
        assert recalled == scheduler.retrievability(before, reviewed_at, SCHED)
        fast = scheduler.review_fsrs(fast, rating, reviewed_at, SCHED)
        assert (int(fast.state), fast.step, fast.due, fast.stability, fast.difficulty) == (
            after.state, after.step, after.due, after.stability, after.difficulty,
        )  # fmt: skip
