from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.template.defaultfilters import floatformat

from decks import scheduler, services, stats
from decks.models import CardProgress, Deck, State, StudySettings
from tests.conftest import NOW, make_deck, make_user


@pytest.fixture
def history(student, deck):
    """Card 1 rated 5 then 4 (two days later), card 2 rated 2: card 3 never studied."""
    c1, c2, _c3 = deck.cards.order_by("position")
    services.record_review(student, c1.pk, 5, NOW - timedelta(days=10))
    services.record_review(student, c1.pk, 4, NOW - timedelta(days=8))
    services.record_review(student, c2.pk, 2, NOW - timedelta(days=1))
    services.ensure_progress(student, deck)
    return c1, c2


def summary_for(user, deck):
    study_settings = StudySettings(user=user)
    decks = list(Deck.objects.filter(pk=deck.pk).with_card_counts())
    return stats.deck_summaries(user, decks, study_settings, NOW, new_done=0)[deck.pk]


def test_mastery_is_mean_latest_rating_over_all_cards(student, deck, history):
    # Latest ratings 4 and 2 -> 80 % and 40 %; the unstudied card counts as 0 %.
    assert summary_for(student, deck).mastery == pytest.approx((80 + 40 + 0) / 3)


def test_predicted_recall_is_mean_fsrs_retrievability_of_studied_cards(student, deck, history):
    fsrs = scheduler.get_scheduler()
    expected = [
        scheduler.retrievability(services.progress_state(p), NOW, fsrs)
        for p in CardProgress.objects.filter(user=student, deck=deck).exclude(state=State.NEW)
    ]
    summary = summary_for(student, deck)
    assert summary.studied == 2
    assert summary.recall == pytest.approx(100 * sum(expected) / 2, abs=1e-6)


def test_streak_counts_ten_reviews_or_clearing_what_was_due():
    today = date(2026, 3, 10)
    per_day = {
        date(2026, 3, 1): 12,
        date(2026, 3, 2): 3,  # 3 reviews, 3 due: cleared -> counts
        date(2026, 3, 3): 2,  # 2 of 5 due: breaks the streak
        date(2026, 3, 7): 10,
        date(2026, 3, 8): 11,
        date(2026, 3, 9): 10,
    }
    due = {date(2026, 3, 2): 3, date(2026, 3, 3): 5}
    result = stats.streaks(per_day, due, today)
    # Today has no reviews yet: the streak up to yesterday still stands.
    assert (result.current, result.longest) == (3, 3)
    per_day[today] = 10
    assert stats.streaks(per_day, due, today).current == 4


def test_review_days_follow_the_users_time_zone_and_day_start(student, deck):
    card = deck.cards.first()
    # 2026-03-10 03:30 in Los Angeles (UTC-7) = 10:30 UTC: before 4 am, so it is 9 March.
    services.record_review(student, card.pk, 3, datetime(2026, 3, 10, 10, 30, tzinfo=UTC))
    services.record_review(student, card.pk, 3, datetime(2026, 3, 10, 11, 30, tzinfo=UTC))
    study_settings = StudySettings(user=student, time_zone="America/Los_Angeles")
    figures = stats.student_stats(student, study_settings, datetime(2026, 3, 10, 20, tzinfo=UTC))
    counted = {cell.day: cell.count for cell in figures.heatmap.cells if cell.count}
    assert counted == {date(2026, 3, 9): 1, date(2026, 3, 10): 1}


def test_review_days_in_a_half_hour_time_zone(student, deck):
    card = deck.cards.first()
    # Kolkata is UTC+5:30 and the day starts at 4 am: 22:29 UTC is 03:59 on 11 March (still
    # 10 March's study day), 22:31 UTC is 04:01 (11 March's).
    for minute in (29, 31):
        at = datetime(2026, 3, 10, 22, minute, tzinfo=UTC)
        services.record_review(student, card.pk, 3, at)
    study_settings = StudySettings(user=student, time_zone="Asia/Kolkata")
    figures = stats.student_stats(student, study_settings, datetime(2026, 3, 11, 12, tzinfo=UTC))
    counted = {cell.day: cell.count for cell in figures.heatmap.cells if cell.count}
    assert counted == {date(2026, 3, 10): 1, date(2026, 3, 11): 1}


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's fallback before 3.38")
def test_review_days_on_a_sqlite_without_unixepoch(student, deck, monkeypatch):
    monkeypatch.setattr(connection.Database, "sqlite_version_info", (3, 37, 2))
    test_review_days_in_a_half_hour_time_zone(student, deck)


def test_forecast_buckets_due_cards_by_day_with_overdue_today(student, deck):
    services.ensure_progress(student, deck)
    c1, c2, c3 = deck.cards.order_by("position")
    for card, due in [(c1, NOW - timedelta(days=2)), (c2, NOW + timedelta(hours=1)),
                      (c3, NOW + timedelta(days=3))]:  # fmt: skip
        CardProgress.objects.filter(user=student, card=card).update(
            state=State.REVIEW, due=due, stability=3, last_reviewed_at=NOW - timedelta(days=5)
        )
    figures = stats.student_stats(student, StudySettings(user=student), NOW)
    values = [bar.value for bar in figures.forecast.bars]
    assert len(values) == 30
    assert values[:5] == [2, 0, 0, 1, 0]


def test_calibration_counts_next_review_failures(student, deck):
    c1, c2, _ = deck.cards.order_by("position")
    for i, rating in enumerate([4, 1, 4, 4]):  # c1: 4 -> 1 (forgotten), 1 -> 4, 4 -> 4
        services.record_review(student, c1.pk, rating, NOW + timedelta(days=i))
    for i, rating in enumerate([4, 2]):  # c2: 4 -> 2 (forgotten)
        services.record_review(student, c2.pk, rating, NOW + timedelta(days=i))
    rows = {row.rating: row for row in stats.calibration(student)}
    assert (rows[4].next_reviews, rows[4].forgotten) == (3, 2)
    assert (rows[1].next_reviews, rows[1].forgotten) == (1, 0)
    assert rows[5].percent is None


def test_stats_page_svgs_are_valid_xml_with_titles(student_client, student, deck, history):
    html = student_client.get("/stats/").content.decode()
    svgs = html.split("<svg")[1:]
    assert len(svgs) >= 3
    for chunk in svgs:
        root = ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
    assert "How honest are your ratings?" in html


def test_stats_page_query_budget_does_not_grow(student_client, student, deck,
                                               django_assert_max_num_queries):  # fmt: skip
    for size in (1, 20):
        for i in range(size):
            services.record_review(student, deck.cards.first().pk, 3, NOW + timedelta(days=i))
        # Includes the database cache's own queries when the history figures are computed.
        with django_assert_max_num_queries(16):
            assert student_client.get("/stats/").status_code == 200


def test_deck_page_table_hardest_first_and_sortable(student_client, student, deck, history):
    html = student_client.get(f"/decks/{deck.pk}/").content.decode()
    assert html.index("Question 2") < html.index("Question 1") < html.index("Question 3")
    html = student_client.get(f"/decks/{deck.pk}/?sort=position").content.decode()
    assert html.index("Question 1") < html.index("Question 2") < html.index("Question 3")
    assert student_client.get(f"/decks/{deck.pk}/?sort=bogus").status_code == 200


def test_deck_page_sorted_by_recall_and_paged(student_client, student):
    deck = make_deck("Long deck", cards=150)
    cards = list(deck.cards.order_by("position"))
    # Card 150 was rated 1 a week ago (lowest recall), card 149 was rated 5 an hour ago.
    services.record_review(student, cards[149].pk, 1, NOW - timedelta(days=7))
    services.record_review(student, cards[148].pk, 5, NOW - timedelta(hours=1))
    html = student_client.get(f"/decks/{deck.pk}/?sort=recall").content.decode()
    assert html.index("Question 150<") < html.index("Question 149<") < html.index("Question 1<")
    assert "150 cards" in html and "Page 1 of 2" in html
    html = student_client.get(f"/decks/{deck.pk}/?sort=position&page=2").content.decode()
    questions = re.findall(r"<summary>(Question \d+)</summary>", html)
    assert questions == [f"Question {i}" for i in range(101, 151)]


def test_class_dashboard_is_staff_only(student_client, deck):
    assert student_client.get(f"/decks/{deck.pk}/class/").status_code == 404


def test_class_dashboard_lists_students_falling_behind_first(client, staff, deck):
    keen, idle = make_user("keen"), make_user("idle")
    make_user("never")
    cards = list(deck.cards.order_by("position"))
    for card in cards:
        services.record_review(keen, card.pk, 5, NOW - timedelta(hours=1))
    services.record_review(idle, cards[0].pk, 1, NOW - timedelta(days=20))
    client.force_login(staff)
    with time_machine.travel(NOW, tick=False):
        response = client.get(f"/decks/{deck.pk}/class/")
    names = [row.username for row in response.context["students"]]
    assert names.index("idle") < names.index("keen")
    assert "never" in names
    rows = {row.username: row for row in response.context["students"]}
    assert rows["keen"].mastery == pytest.approx(100)
    assert rows["keen"].reviews_7d == 3
    assert rows["idle"].overdue == 1
    assert rows["never"].studied == 0
    hardest = response.context["cards"]
    assert hardest[0].front == "Question 1"
    assert hardest[0].failed_share == pytest.approx(50)
    download = client.get(f"/decks/{deck.pk}/class/?download=students")
    text = b"".join(download.streaming_content).decode()
    assert text.splitlines()[0].startswith("student,cards_studied")
    assert len(text.splitlines()) == 1 + len(names)


@pytest.mark.parametrize("students", [1, 30])
def test_class_dashboard_query_budget(client, staff, deck, students, django_assert_max_num_queries):
    card = deck.cards.first()
    for i in range(students):
        services.record_review(make_user(f"s{i}"), card.pk, 3, NOW)
    client.force_login(staff)
    # Includes the database cache's queries when the hardest cards are computed.
    with django_assert_max_num_queries(15):
        assert client.get(f"/decks/{deck.pk}/class/").status_code == 200


@pytest.mark.parametrize("decks", [1, 20])
def test_home_query_budget_with_figures(student_client, student, decks,
                                        django_assert_max_num_queries):  # fmt: skip
    for i in range(decks):
        deck = make_deck(f"Deck {i}")
        services.record_review(student, deck.cards.first().pk, 4, NOW)
    with django_assert_max_num_queries(7):
        assert student_client.get("/").status_code == 200


@pytest.mark.parametrize("value", [0.0, 0.5, 1.5, 2.5, 33.333, 49.5, 66.66666, 99.5, 100.0])
def test_home_percentages_round_as_the_templates_do(value):
    assert str(stats.whole_percent(value)) == floatformat(value, 0)
