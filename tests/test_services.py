from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decks import queue, services
from decks.models import Card, CardProgress, Review, State, StudySettings
from decks.scheduler import InvalidRating
from tests.conftest import NOW, make_deck, make_user

FIELDS = [
    "state", "step", "due", "stability", "difficulty", "reps", "lapses", "last_rating",
    "last_reviewed_at",
]  # fmt: skip


def snapshot(user, card) -> dict:
    return CardProgress.objects.filter(user=user, card=card).values(*FIELDS).get()


@pytest.fixture
def card(deck) -> Card:
    return deck.cards.order_by("position").first()


def test_ensure_progress_adds_new_rows_once(student, deck):
    services.ensure_progress(student, deck)
    services.ensure_progress(student, deck)
    rows = CardProgress.objects.filter(user=student, deck=deck)
    assert rows.count() == 3
    assert set(rows.values_list("state", flat=True)) == {State.NEW}
    assert list(rows.order_by("position").values_list("position", flat=True)) == [1, 2, 3]


def test_ensure_progress_on_an_empty_deck_after_a_full_one(
    student, deck, django_assert_num_queries
):
    """The newest card at or below the empty deck's id is the full deck's: it must not
    count as the empty deck's (one query, and no rows)."""
    empty = make_deck("Empty", cards=0)
    services.ensure_progress(student, deck)
    with django_assert_num_queries(1):
        services.ensure_progress(student, empty)
    assert not CardProgress.objects.filter(user=student, deck=empty).exists()
    card = Card.objects.create(deck=empty, front="Q", back="A", position=1)
    services.ensure_progress(student, empty)
    assert CardProgress.objects.filter(user=student, deck=empty).get().card == card
    assert CardProgress.objects.filter(user=student).count() == 4


def _rows_removed_by_filter(plan: dict) -> int:
    return plan.get("Rows Removed by Filter", 0) + sum(
        _rows_removed_by_filter(child) for child in plan.get("Plans", [])
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's query plans")
def test_ensure_progress_checks_a_deck_without_reading_later_decks_cards(student):
    """Opening an old deck's study page must not walk the cards of every deck made since:
    the deck's newest card is one index probe, whatever comes after it."""
    deck = make_deck("Old deck", cards=3000)
    make_deck("Newer deck", cards=1000)
    services.ensure_progress(student, deck)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE decks_card")
        with CaptureQueriesContext(connection) as captured:
            services.ensure_progress(student, deck)
        [check] = captured.captured_queries
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {check['sql']}")
        [[[plan]]] = cursor.fetchall()
    assert _rows_removed_by_filter(plan["Plan"]) == 0


def test_record_review_appends_history_and_moves_progress(student, card):
    review = services.record_review(student, card.pk, 4, NOW, time_taken_ms=3200)
    assert review.state_before == State.NEW
    assert review.state_after == State.LEARNING
    assert review.time_taken_ms == 3200
    assert review.retrievability is None
    assert review.due_after == NOW + timedelta(minutes=10)
    progress = snapshot(student, card)
    assert progress["reps"] == 1
    assert progress["last_rating"] == 4
    assert progress["last_reviewed_at"] == NOW
    assert progress["due"] == review.due_after


def test_review_records_retrievability_of_a_studied_card(student, card):
    first = services.record_review(student, card.pk, 5, NOW)
    second = services.record_review(student, card.pk, 4, first.due_after)
    assert 0 < second.retrievability < 1
    assert second.state_before == State.REVIEW


@pytest.mark.parametrize("bad", [0, 6, "4"])
def test_rating_out_of_range_records_nothing(student, card, bad):
    with pytest.raises(InvalidRating):
        services.record_review(student, card.pk, bad, NOW)
    assert not Review.objects.exists()
    assert not CardProgress.objects.exists()


def test_stale_rating_is_refused(student, card):
    services.record_review(student, card.pk, 3, NOW, expected_reps=0)
    with pytest.raises(services.StaleRating):
        services.record_review(student, card.pk, 3, NOW, expected_reps=0)
    assert Review.objects.count() == 1


def _rated_in_between(monkeypatch, student, card, rating: int) -> None:
    """Make another rating of ``card`` land after the next record_review has read the
    card's progress and before it writes (what a concurrent request can do)."""
    review = services.scheduler.review
    calls = []

    def review_then_interrupt(*args, **kwargs):
        outcome = review(*args, **kwargs)
        if not calls:
            calls.append(1)
            services.record_review(student, card.pk, rating, NOW)
        return outcome

    monkeypatch.setattr(services.scheduler, "review", review_then_interrupt)


def test_rating_that_loses_a_race_starts_again_from_the_winner(monkeypatch, student, card):
    _rated_in_between(monkeypatch, student, card, rating=3)
    services.record_review(student, card.pk, 4, NOW + timedelta(minutes=1))
    first, second = Review.objects.filter(card=card).order_by("id")
    assert (first.rating, second.rating) == (3, 4)
    assert second.state_before == first.state_after
    assert second.due_before == first.due_after
    assert snapshot(student, card)["reps"] == 2


def test_rating_of_a_card_rated_since_it_was_shown_is_stale(monkeypatch, student, card):
    _rated_in_between(monkeypatch, student, card, rating=3)
    with pytest.raises(services.StaleRating):
        services.record_review(student, card.pk, 4, NOW, expected_reps=0)
    assert list(Review.objects.values_list("rating", flat=True)) == [3]
    assert snapshot(student, card)["reps"] == 1


def test_a_progress_row_the_caller_read_before_another_rating_is_read_again(student, card):
    services.record_review(student, card.pk, 3, NOW)
    read_earlier = CardProgress.objects.get(user=student, card=card)
    services.record_review(student, card.pk, 4, NOW + timedelta(minutes=1))
    services.record_review(student, card.pk, 5, NOW + timedelta(minutes=2), progress=read_earlier)
    _first, second, third = Review.objects.filter(card=card).order_by("id")
    assert third.state_before == second.state_after
    assert third.due_before == second.due_after
    assert snapshot(student, card)["reps"] == 3
    with pytest.raises(services.StaleRating):
        services.record_review(
            student, card.pk, 5, NOW + timedelta(minutes=3), expected_reps=1,
            progress=read_earlier,
        )  # fmt: skip


def test_lapse_counts_a_forgotten_review_card(student, card):
    first = services.record_review(student, card.pk, 5, NOW)
    services.record_review(student, card.pk, 1, first.due_after)
    assert snapshot(student, card)["lapses"] == 1


def test_undo_first_review_restores_new(student, deck, card):
    services.ensure_progress(student, deck)
    before = snapshot(student, card)
    services.record_review(student, card.pk, 3, NOW)
    undone = services.undo_last_review(student, deck)
    assert undone.card_id == card.pk
    assert snapshot(student, card) == before
    assert before["state"] == State.NEW
    assert not Review.objects.exists()


def test_undo_later_review_restores_previous_state(student, deck, card):
    first = services.record_review(student, card.pk, 5, NOW)
    before = snapshot(student, card)
    services.record_review(student, card.pk, 1, first.due_after)
    services.undo_last_review(student, deck)
    assert snapshot(student, card) == before
    assert Review.objects.count() == 1


def test_undo_only_takes_back_own_reviews_in_that_deck(student, other_student, deck, card):
    other_deck = make_deck("Other", cards=1)
    services.record_review(student, card.pk, 4, NOW)
    services.record_review(other_student, card.pk, 4, NOW + timedelta(seconds=5))
    services.record_review(student, other_deck.cards.get().pk, 4, NOW + timedelta(seconds=9))
    undone = services.undo_last_review(student, deck)
    assert undone.card_id == card.pk
    assert Review.objects.filter(user=other_student).count() == 1
    assert Review.objects.filter(user=student).count() == 1
    assert services.undo_last_review(student, deck) is None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sequence=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12),
    gaps=st.lists(st.integers(min_value=1, max_value=60 * 24 * 40), min_size=12, max_size=12),
)
def test_undo_after_any_sequence_restores_previous_state(student, deck, sequence, gaps):
    card = Card.objects.create(deck=deck, front="q", back="a", position=99)
    services.ensure_progress(student, deck)
    now, states = NOW, []
    for rating, gap in zip(sequence, gaps, strict=False):
        states.append(snapshot(student, card))
        services.record_review(student, card.pk, rating, now)
        now += timedelta(minutes=gap)
        assert snapshot(student, card)["reps"] == Review.objects.filter(card=card).count()
    while states:
        services.undo_last_review(student, deck)
        assert snapshot(student, card) == states.pop()
    assert not Review.objects.filter(card=card).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL: two connections")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ratings_apply_one_after_the_other():
    student = make_user("racer")
    card = make_deck("Race", cards=1).cards.get()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def rate(rating: int) -> None:
        try:
            barrier.wait()
            services.record_review(student, card.pk, rating, NOW)
        except BaseException as error:  # noqa: BLE001 - reported to the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=rate, args=(r,)) for r in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    first, second = Review.objects.filter(card=card).order_by("id")
    assert first.state_before == State.NEW
    # The second rating started from the first one's result, not from "new" again.
    assert second.state_before == first.state_after
    assert second.due_before == first.due_after
    assert snapshot(student, card)["reps"] == 2


def test_ensure_progress_picks_up_cards_added_later(student, deck):
    services.ensure_progress(student, deck)
    Card.objects.create(deck=deck, front="late", back="card", position=10)
    services.ensure_progress(student, deck)
    assert CardProgress.objects.filter(user=student, deck=deck).count() == 4
    assert CardProgress.objects.get(user=student, card__front="late").state == State.NEW


def test_rating_a_card_without_a_row_gives_the_whole_deck_its_rows(student, deck):
    """A rating of the deck's newest card before any page made the rows must not leave
    the others without one: ensure_progress would take them all to be there."""
    services.ensure_progress(student, deck)
    late = [
        Card.objects.create(deck=deck, front=f"late {i}", back="card", position=10 + i)
        for i in range(2)
    ]
    services.record_review(student, late[1].pk, 3, NOW, deck_id=deck.pk)
    services.ensure_progress(student, deck)
    assert CardProgress.objects.filter(user=student, deck=deck).count() == 5
    assert CardProgress.objects.get(user=student, card=late[0]).state == State.NEW


def test_ensure_progress_costs_one_query_when_nothing_is_missing(
    student, deck, django_assert_num_queries
):
    services.ensure_progress(student, deck)
    with django_assert_num_queries(1):
        services.ensure_progress(student, deck)


def test_reads_sent_with_a_rating_see_it(student, deck, card):
    """record_review(then=...): the next page's reads run after the write (with it, in
    one round trip, on PostgreSQL), so they count the rating just made."""
    services.ensure_progress(student, deck)
    study_settings = StudySettings(user=student)
    after = [
        queue.counts_read(student, deck, study_settings, NOW),
        queue.next_card_read(student, deck, study_settings, NOW),
    ]
    services.record_review(student, card.pk, 4, NOW, study_settings=study_settings, then=after)
    (done, counts), following = (read.result for read in after)
    assert (done.new, counts.new, counts.learning) == (1, 2, 0)
    assert following.card.position == 2
    assert (done, counts) == queue.counts(student, deck, study_settings, NOW)
