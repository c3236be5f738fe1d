from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse

from decks import exporters, services
from decks.exporters import CARD_COLUMNS, REVIEW_COLUMNS, neutralise
from decks.models import Card, Review
from decks.rawsql import stream_rows
from tests.conftest import NOW, make_deck


def read_csv(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def history(student, other_student, deck):
    """Alice rates two cards (one twice), Bob rates one; a second deck has one review."""
    cards = list(deck.cards.order_by("position"))
    services.record_review(student, cards[0].pk, 5, NOW, time_taken_ms=2100)
    services.record_review(student, cards[1].pk, 1, NOW + timedelta(minutes=1))
    services.record_review(student, cards[1].pk, 4, NOW + timedelta(minutes=3))
    services.record_review(other_student, cards[0].pk, 2, NOW)
    second = make_deck("Second deck", cards=1)
    services.record_review(student, second.cards.get().pk, 3, NOW + timedelta(minutes=5))
    return {"deck": deck, "second": second, "cards": cards}


def test_reviews_csv_has_the_columns_and_one_row_per_review(student_client, history):
    response = student_client.get("/export/reviews.csv")
    rows = read_csv(response)
    assert list(rows[0]) == REVIEW_COLUMNS
    assert len(rows) == 4
    assert {row["user"] for row in rows} == {"alice"}
    first = rows[0]
    assert first["question"] == "Question 1"
    assert (first["rating"], first["rating_label"]) == ("5", "Perfectly")
    assert first["reviewed_at"] == "2026-03-10T12:00:00Z"
    assert first["time_taken_ms"] == "2100"
    assert (first["state_before"], first["state_after"]) == ("new", "review")
    assert first["due_after"].endswith("Z")
    assert [row["reviewed_at"] for row in rows] == sorted(row["reviewed_at"] for row in rows)
    assert rows[1]["rating_label"] == "Not at all"
    assert "attachment; filename=" in response["Content-Disposition"]


def test_reviews_csv_for_one_deck(student_client, history):
    deck = history["deck"]
    response = student_client.get(f"/export/reviews.csv?deck={deck.pk}")
    rows = read_csv(response)
    assert len(rows) == 3
    assert {row["deck"] for row in rows} == {"Public deck"}
    assert "studyapp-reviews-public-deck-" in response["Content-Disposition"]


def test_cards_csv_lists_every_card_the_student_may_study(student_client, history):
    rows = read_csv(student_client.get(f"/export/cards.csv?deck={history['deck'].pk}"))
    assert list(rows[0]) == CARD_COLUMNS
    assert [row["question"] for row in rows] == ["Question 1", "Question 2", "Question 3"]
    one, two, three = rows
    assert (one["reviews"], one["last_rating"], one["mastery"]) == ("1", "5", "100%")
    assert (two["reviews"], two["last_rating"], two["mastery"]) == ("2", "4", "80%")
    assert (three["reviews"], three["state"], three["mastery"]) == ("0", "new", "0%")
    assert three["retrievability_now"] == ""
    assert 0 < float(one["retrievability_now"]) <= 1


def test_student_never_gets_other_students_rows(student_client, history, other_student):
    for kind in ["reviews", "cards"]:
        assert {r["user"] for r in read_csv(student_client.get(f"/export/{kind}.csv"))} == {"alice"}
        for query in [f"user={other_student.pk}", "scope=all"]:
            assert student_client.get(f"/export/{kind}.csv?{query}").status_code == 404


def test_private_deck_of_another_student_is_404(student_client, other_student):
    private = make_deck("Bob's", owner=other_student, is_public=False)
    assert student_client.get(f"/export/reviews.csv?deck={private.pk}").status_code == 404


@pytest.mark.parametrize("query", ["deck=abc", "deck=1&deck=x", "user=%00"])
def test_malformed_ids_are_400(student_client, db, query):
    assert student_client.get(f"/export/reviews.csv?{query}").status_code == 400


def test_staff_export_everyone_filtered_by_deck_and_user(client, staff, history, other_student):
    client.force_login(staff)
    everyone = read_csv(client.get("/export/reviews.csv?scope=all"))
    assert len(everyone) == 5
    bob = read_csv(client.get(f"/export/reviews.csv?user={other_student.pk}"))
    assert {r["user"] for r in bob} == {"bob"}
    deck = read_csv(client.get(f"/export/cards.csv?scope=all&deck={history['deck'].pk}"))
    assert {r["user"] for r in deck} == {"alice", "bob"}


def test_staff_export_page_and_admin_actions(client, staff, history):
    client.force_login(staff)
    assert client.get("/admin/decks/deck/export-progress/").status_code == 200
    response = client.get("/admin/decks/deck/export-progress/?kind=cards")
    assert response.status_code == 302 and response.url.startswith("/export/cards.csv?scope=all")
    response = client.post(
        "/admin/decks/deck/",
        {"action": "export_reviews", "_selected_action": [history["deck"].pk]},
    )
    assert response.status_code == 302
    assert len(read_csv(client.get(response.url))) == 4
    response = client.post(
        "/admin/auth/user/",
        {"action": "export_cards", "_selected_action": [staff.pk]},
    )
    assert response.status_code == 302 and "/export/cards.csv" in response.url


def test_reviews_of_a_deck_no_longer_visible_are_left_out(student_client, history, other_student):
    second = history["second"]
    second.owner, second.is_public = other_student, False
    second.save()
    rows = read_csv(student_client.get("/export/reviews.csv"))
    assert len(rows) == 3
    assert {row["deck"] for row in rows} == {"Public deck"}


def test_reviews_csv_cells_written_by_the_database_match_the_reviews(student_client, history):
    """The cells from the rating on are written by the database: each must say what the
    review holds (times in UTC to the second, numbers to four decimals, empty for none)."""
    rows = read_csv(student_client.get("/export/reviews.csv"))
    reviews = Review.objects.filter(user__username="alice").order_by("reviewed_at", "id")
    assert len(rows) == len(reviews) == 4
    labels = {1: "Not at all", 2: "Barely", 3: "With effort", 4: "Well", 5: "Perfectly"}
    states = {0: "new", 1: "learning", 2: "review", 3: "relearning"}
    for row, review in zip(rows, reviews, strict=True):
        expected = {
            "card_id": str(review.card_id),
            "rating": str(review.rating),
            "rating_label": labels[review.rating],
            "reviewed_at": review.reviewed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_taken_ms": "" if review.time_taken_ms is None else str(review.time_taken_ms),
            "state_before": states[review.state_before],
            "state_after": states[review.state_after],
            "scheduled_days": f"{review.scheduled_days:.4f}",
            "due_after": review.due_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stability": f"{review.stability_after:.4f}",
            "difficulty": f"{review.difficulty_after:.4f}",
            "retrievability": (
                "" if review.retrievability is None else f"{review.retrievability:.4f}"
            ),
        }
        assert {column: row[column] for column in expected} == expected
    assert rows[0]["retrievability"] == ""  # a new card's first rating has none
    assert rows[1]["time_taken_ms"] == ""


def test_reviews_csv_times_are_truncated_and_numbers_rounded_from_their_decimal(
    student_client, student, deck
):  # fmt: skip
    """Both databases round 1.75515 (stored as 1.75514999…) up, as it reads, and cut a
    time's fraction of a second; a relearning card and a big interval come out whole."""
    card = deck.cards.first()
    services.record_review(student, card.pk, 3, NOW)
    Review.objects.filter(user=student).update(
        reviewed_at=NOW + timedelta(microseconds=999_999),
        state_before=3, state_after=3, scheduled_days=36500.0,
        stability_after=1.75515, difficulty_after=10.0, retrievability=0.00005,
    )  # fmt: skip
    (row,) = read_csv(student_client.get("/export/reviews.csv"))
    assert row["reviewed_at"] == "2026-03-10T12:00:00Z"
    assert (row["state_before"], row["state_after"]) == ("relearning", "relearning")
    assert (row["scheduled_days"], row["stability"], row["difficulty"]) == (
        "36500.0000", "1.7552", "10.0000"
    )  # fmt: skip
    assert row["retrievability"] == "0.0001"


def test_iso_utc_takes_aware_and_naive_datetimes_and_database_text():
    kolkata = timezone(timedelta(hours=5, minutes=30))
    assert exporters.iso_utc(datetime(2026, 3, 10, 12, 0, 5, 999999, tzinfo=kolkata)) == (
        "2026-03-10T06:30:05Z"
    )
    assert exporters.iso_utc(datetime(2026, 3, 10, 6, 30, 5, 250000)) == "2026-03-10T06:30:05Z"
    assert exporters.iso_utc("2026-03-10 06:30:05.250000") == "2026-03-10T06:30:05Z"
    assert exporters.iso_utc("2026-03-10 06:30:05") == "2026-03-10T06:30:05Z"
    assert exporters.iso_utc(None) == ""


def _review_row(user_id: int, card_id: int, minute: int) -> tuple:
    at = f"2026-03-10T12:{minute:02d}:00Z"
    return (user_id, card_id, f"3,With effort,{at},1500,new,review,1.5000,{at},1.5000,5.0000,")


@pytest.mark.parametrize("card_ids", [[7, 9, 11], [7, 5000, 90_000_000]], ids=["dense", "sparse"])
def test_review_csv_writes_each_card_and_user_once_and_skips_other_cards(card_ids):
    """Dense card ids take the list of slots, sparse ones the dict: the same CSV, and
    rows of cards outside the export (below, among and above its ids) are left out."""
    cards = [(card_id, 'Deck, "one"', f"=Q{card_id}") for card_id in card_ids]
    low, middle, high = card_ids
    rows = [
        _review_row(1, high, 0), _review_row(2, low, 1), _review_row(1, low - 1, 2),
        _review_row(1, middle + 1, 3), _review_row(2, high, 4), _review_row(1, high + 1, 5),
        _review_row(1, middle, 6),
    ]  # fmt: skip
    text = "".join(exporters.review_csv(rows, {1: "ann", 2: "@bo"}, cards, batch=2))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [(r["user"], r["card_id"], r["reviewed_at"]) for r in parsed] == [
        ("ann", str(high), "2026-03-10T12:00:00Z"),
        ("'@bo", str(low), "2026-03-10T12:01:00Z"),
        ("'@bo", str(high), "2026-03-10T12:04:00Z"),
        ("ann", str(middle), "2026-03-10T12:06:00Z"),
    ]
    assert {(r["deck"], r["question"]) for r in parsed} == {
        ('Deck, "one"', f"'=Q{card_id}") for card_id in card_ids
    }
    assert text.count("\r\n") == 5


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_cells_are_neutralised(student_client, student, start):
    deck = make_deck(f'{start}HYPERLINK("http://evil")', cards=0)
    card = Card.objects.create(deck=deck, front=f"{start}1+1", back="2", position=1)
    services.record_review(student, card.pk, 3, NOW)
    (row,) = read_csv(student_client.get(f"/export/reviews.csv?deck={deck.pk}"))
    assert row["question"] == f"'{start}1+1"
    assert row["deck"].startswith("'")
    assert neutralise("plain") == "plain"


def test_export_command_writes_a_file(tmp_path, history, capsys):
    out = tmp_path / "reviews.csv"
    call_command("export_progress", "--user", "alice", "--kind", "reviews", "--out", str(out))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 4
    assert "Exported 4 reviews rows" in capsys.readouterr().err
    call_command("export_progress", "--deck", str(history["deck"].pk), "--kind", "cards")
    printed = capsys.readouterr().out
    assert printed.startswith(",".join(CARD_COLUMNS))


def test_export_command_rejects_unknown_user_or_deck(db):
    with pytest.raises(CommandError, match="No user named"):
        call_command("export_progress", "--user", "ghost")
    with pytest.raises(CommandError, match="No deck with id"):
        call_command("export_progress", "--deck", "424242")


def test_export_query_count_does_not_grow_with_rows(student_client, student, deck,
                                                   django_assert_max_num_queries):  # fmt: skip
    card = deck.cards.first()
    for i in range(30):
        services.record_review(student, card.pk, 3, NOW + timedelta(days=i))
    with django_assert_max_num_queries(6):
        assert len(read_csv(student_client.get("/export/reviews.csv"))) == 30


def test_an_export_stopped_midway_leaves_the_connection_usable(history):
    """A download cancelled part-way closes the row stream (on PostgreSQL, libpq's chunked
    mode): the connection must be ready for the next request's queries."""
    rows = stream_rows(Review.objects.values_list("id"), chunk=2)
    assert len(next(rows)) == 1
    rows.close()
    assert Review.objects.count() == 5
    assert Card.objects.filter(deck=history["deck"]).count() == 3
