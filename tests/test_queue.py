from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from decks import queue, services
from decks.models import CardProgress, State, StudySettings
from tests.conftest import NOW, make_deck


@pytest.fixture
def deck(db):
    return make_deck("Queue", cards=6)


def cards(deck) -> list:
    return list(deck.cards.order_by("position"))


def set_progress(user, card, state: int, due: datetime) -> None:
    CardProgress.objects.filter(user=user, card=card).update(
        state=state,
        due=due,
        stability=5.0,
        difficulty=5.0,
        last_reviewed_at=due - timedelta(days=5),
    )


def pick(user, deck, now=NOW, **limits):
    """The next card's position, with today's counts given and with the statement
    reading them itself (as the rate view does on PostgreSQL): the two must agree."""
    study_settings = StudySettings(user=user, **limits)
    done = queue.done_today(user, study_settings, now)
    progress = queue.next_card(user, deck, study_settings, now, done)
    counted_inline = queue.next_card(user, deck, study_settings, now)
    assert (counted_inline and counted_inline.pk) == (progress and progress.pk)
    return progress.card.position if progress else None


@pytest.fixture
def queued(student, deck):
    services.ensure_progress(student, deck)
    return cards(deck)


def test_new_cards_come_in_deck_order(student, deck, queued):
    assert pick(student, deck) == 1


def test_due_learning_beats_due_review_beats_new(student, deck, queued):
    set_progress(student, queued[4], State.REVIEW, NOW - timedelta(days=1))
    assert pick(student, deck) == 5
    set_progress(student, queued[5], State.RELEARNING, NOW - timedelta(minutes=1))
    assert pick(student, deck) == 6


def test_most_overdue_review_first(student, deck, queued):
    set_progress(student, queued[2], State.REVIEW, NOW - timedelta(days=1))
    set_progress(student, queued[3], State.REVIEW, NOW - timedelta(days=9))
    set_progress(student, queued[4], State.REVIEW, NOW + timedelta(days=1))
    assert pick(student, deck) == 4


def test_new_card_limit_stops_new_cards(student, deck, queued):
    for i, card in enumerate(queued[:2]):
        services.record_review(student, card.pk, 5, NOW - timedelta(minutes=10 - i))
    assert pick(student, deck, new_per_day=2) is None
    assert pick(student, deck, new_per_day=3) == 3
    _done, counts = queue.counts(student, deck, StudySettings(user=student, new_per_day=2), NOW)
    assert counts.new == 0
    assert counts.new_limited


def test_review_limit_stops_reviews(student, deck, queued):
    card = queued[0]
    first = services.record_review(student, card.pk, 5, NOW - timedelta(days=30))
    services.record_review(student, card.pk, 4, NOW - timedelta(hours=1))
    assert first.state_after == State.REVIEW
    set_progress(student, queued[1], State.REVIEW, NOW - timedelta(days=1))
    assert pick(student, deck, max_reviews_per_day=1, new_per_day=0) is None
    assert pick(student, deck, max_reviews_per_day=2, new_per_day=0) == 2
    for limit, due, limited in ((1, 0, True), (2, 1, False)):
        study_settings = StudySettings(user=student, max_reviews_per_day=limit)
        done, counts = queue.counts(student, deck, study_settings, NOW)
        assert done.reviews == 1
        assert (counts.due, counts.reviews_limited) == (due, limited)


def test_learn_ahead_only_when_nothing_else_is_left(student, deck, queued):
    set_progress(student, queued[0], State.LEARNING, NOW + timedelta(minutes=15))
    assert pick(student, deck) == 2  # new cards first
    assert pick(student, deck, new_per_day=0) == 1  # then the learning card, early
    set_progress(student, queued[0], State.LEARNING, NOW + timedelta(minutes=25))
    assert pick(student, deck, new_per_day=0) is None


@pytest.mark.parametrize(
    ("local_time", "counts_today"),
    [("03:30", True), ("04:30", False)],
)
def test_study_day_starts_at_4am_in_the_users_time_zone(student, deck, queued, local_time,
                                                        counts_today):  # fmt: skip
    """A review at 11 pm yesterday (Los Angeles) counts towards today until 4 am."""
    study_settings = StudySettings(user=student, time_zone="America/Los_Angeles", new_per_day=1)
    # 2026-03-10 23:00 in Los Angeles (PDT, UTC-7) is 2026-03-11 06:00 UTC.
    services.record_review(student, queued[0].pk, 5, datetime(2026, 3, 11, 6, 0, tzinfo=UTC))
    hour, minute = map(int, local_time.split(":"))
    now = datetime(2026, 3, 11, hour + 7, minute, tzinfo=UTC)
    done = queue.done_today(student, study_settings, now)
    assert done.new == (1 if counts_today else 0)
    progress = queue.next_card(student, deck, study_settings, now, done)
    assert (progress is None) == counts_today
    assert (queue.next_card(student, deck, study_settings, now) is None) == counts_today


def test_day_start_respects_daylight_saving():
    settings = StudySettings(time_zone="Europe/Berlin", day_start_hour=4)
    # 29 March 2026: clocks go forward at 02:00 in Berlin (UTC+1 -> UTC+2).
    start = settings.day_start(datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert start == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    start = settings.day_start(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    assert start == datetime(2026, 3, 28, 3, 0, tzinfo=UTC)


def test_counts_and_next_due(student, deck, queued):
    set_progress(student, queued[0], State.LEARNING, NOW - timedelta(minutes=1))
    set_progress(student, queued[1], State.REVIEW, NOW - timedelta(days=1))
    set_progress(student, queued[2], State.REVIEW, NOW + timedelta(days=2))
    study_settings = StudySettings(user=student)
    done, counts = queue.counts(student, deck, study_settings, NOW)
    assert done == queue.done_today(student, study_settings, NOW)
    assert (counts.new, counts.learning, counts.due) == (3, 1, 1)
    assert queue.next_due(student, deck) == NOW - timedelta(days=1)


def test_other_students_progress_is_not_in_my_queue(student, other_student, deck, queued):
    services.ensure_progress(other_student, deck)
    set_progress(other_student, queued[3], State.LEARNING, NOW - timedelta(minutes=1))
    assert pick(student, deck) == 1


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def test_the_study_reads_give_what_the_orm_reads(student, deck, queued):
    """The hand-written reads (binary results on PostgreSQL) against the ORM's, field by
    field: datetimes, floats, the settings' JSON parameters."""
    set_progress(student, queued[0], State.REVIEW, NOW - timedelta(days=1))
    parameters = [round(0.1 * i + 0.2, 4) for i in range(21)]
    StudySettings.objects.create(
        user=student, fsrs_parameters=parameters, model_fitted_at=NOW, new_per_day=7
    )
    found_deck, found_settings, found_progress = queue.study_deck(student, deck.pk, queued[0].pk)
    assert _fields(found_deck) == _fields(deck)
    assert _fields(found_settings) == _fields(StudySettings.objects.get(user=student))
    assert found_settings.fsrs_parameters == parameters
    orm_progress = CardProgress.objects.get(user=student, card=queued[0])
    assert _fields(found_progress) == _fields(orm_progress)
    assert _fields(found_progress.card) == _fields(queued[0])
    done = queue.done_today(student, found_settings, NOW)
    following = queue.next_card(student, deck, found_settings, NOW, done)
    assert _fields(following) == _fields(orm_progress)
    assert following.due.utcoffset() == timedelta(0)
    assert _fields(following.card) == _fields(queued[0])
