from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from decks.models import Card, CardProgress, Review, State
from decks.rawsql import pipelines
from tests.conftest import make_deck

HX = {"HTTP_HX_REQUEST": "true"}


def token_in(response) -> str:
    return re.search(r'name="token" value="([^"]+)"', response.content.decode()).group(1)


def urls(deck) -> dict[str, str]:
    return {
        name: reverse(f"study{suffix}", args=[deck.pk])
        for name, suffix in [("study", ""), ("flip", "_flip"), ("rate", "_rate"), ("undo", "_undo")]
    }


@pytest.fixture
def u(deck):
    return urls(deck)


def test_study_page_full_shows_first_question_and_show_answer(student_client, u):
    response = student_client.get(u["study"])
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    assert "Question 1" in html
    assert "Show answer" in html
    assert "Answer 1" not in html
    assert "3 new" in html
    assert response["Vary"] and "HX-Request" in response["Vary"]


def test_study_fragment_for_htmx_has_no_page_chrome(student_client, u):
    student_client.get(u["study"])
    response = student_client.get(u["study"], **HX)
    html = response.content.decode()
    assert "<html" not in html
    assert "Question 1" in html


def test_flip_shows_answer_and_five_rating_buttons_with_intervals(student_client, u):
    token = token_in(student_client.get(u["study"]))
    for headers in ({}, HX):
        response = student_client.get(u["flip"], {"token": token}, **headers)
        html = response.content.decode()
        assert response.status_code == 200
        assert ("<html" in html) == (headers == {})
        assert "Answer 1" in html
        buttons = re.findall(r'<button type="submit" name="rating" value="(\d)"', html)
        assert buttons == ["1", "2", "3", "4", "5"]
        assert "1 Not at all" in html and "5 Perfectly" in html
        assert re.search(r'class="rating-interval">10m<', html)
        assert "Recalled it instantly" in html


def test_htmx_flip_swaps_in_the_card_alone(student_client, u):
    """The question's counts still stand after a flip (nothing was rated), so an htmx
    flip answers only the card, which the flip form targets; without htmx, the page."""
    page = student_client.get(u["study"])
    assert 'hx-target="closest .study-card" hx-swap="outerHTML"' in page.content.decode()
    html = student_client.get(u["flip"], {"token": token_in(page)}, **HX).content.decode()
    assert html.strip().startswith('<article class="study-card"')
    assert html.strip().endswith("</article>")
    assert "Answer 1" in html and "queue-counts" not in html and 'id="undo"' not in html
    full = student_client.get(u["flip"], {"token": token_in(page)}).content.decode()
    assert "3 new" in full and "Answer 1" in full


def test_rate_with_htmx_records_and_returns_next_question(student_client, student, u):
    token = token_in(student_client.get(u["study"]))
    response = student_client.post(u["rate"], {"token": token, "rating": "4"}, **HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert "Question 2" in html
    review = Review.objects.get(user=student)
    assert (review.rating, review.card.front) == (4, "Question 1")
    assert review.time_taken_ms is not None and review.time_taken_ms >= 0


def test_the_question_after_a_rating_counts_it(student_client, u, monkeypatch):
    """The rate view reads the queue after its write (on PostgreSQL with it, in one
    round trip): the counts and the next question already take the rating in."""
    synced = []
    if pipelines():
        pipeline = type(connection.connection).pipeline

        def counted(conn, *args, **kwargs):
            synced.append(1)
            return pipeline(conn, *args, **kwargs)

        monkeypatch.setattr(type(connection.connection), "pipeline", counted)
    response = student_client.get(u["study"])
    for rating, new_left, question in (("4", "2 new", "Question 2"), ("5", "1 new", "Question 3")):
        response = student_client.post(
            u["rate"], {"token": token_in(response), "rating": rating}, **HX
        )
        html = response.content.decode()
        assert new_left in html and question in html
    assert len(synced) == (2 if pipelines() else 0)


def test_rate_without_htmx_redirects_to_study_page(student_client, u):
    token = token_in(student_client.get(u["study"]))
    response = student_client.post(u["rate"], {"token": token, "rating": "5"})
    assert response.status_code == 302
    assert response.url == u["study"]
    assert "Question 2" in student_client.get(response.url).content.decode()


def test_rating_twice_records_once(student_client, student, u):
    token = token_in(student_client.get(u["study"]))
    student_client.post(u["rate"], {"token": token, "rating": "4"}, **HX)
    response = student_client.post(u["rate"], {"token": token, "rating": "2"}, **HX)
    assert response.status_code == 200
    assert "already rated" in response.content.decode()
    assert Review.objects.filter(user=student).count() == 1


@pytest.mark.parametrize("rating", ["0", "6", "x", ""])
def test_rating_out_of_range_is_400_and_records_nothing(student_client, u, rating):
    token = token_in(student_client.get(u["study"]))
    response = student_client.post(u["rate"], {"token": token, "rating": rating})
    assert response.status_code == 400
    assert b"1 to 5" in response.content
    assert not Review.objects.exists()


@pytest.mark.parametrize("token", ["", "garbage", "WzEsMCwxXQ:1xWT:forged"])
def test_broken_token_is_400(student_client, u, token):
    student_client.get(u["study"])
    assert student_client.post(u["rate"], {"token": token, "rating": "3"}).status_code == 400
    assert student_client.get(u["flip"], {"token": token}).status_code == 400
    assert not Review.objects.exists()


def test_token_from_another_deck_is_404(student_client, deck, u):
    other = make_deck("Other")
    token = token_in(student_client.get(urls(other)["study"]))
    assert student_client.post(u["rate"], {"token": token, "rating": "3"}).status_code == 404
    assert student_client.get(u["flip"], {"token": token}).status_code == 404
    assert not Review.objects.exists()


def test_rating_a_card_deleted_since_it_was_shown_is_404(student_client, deck, u):
    token = token_in(student_client.get(u["study"]))
    CardProgress.objects.all().delete()
    Card.objects.filter(deck=deck).delete()
    assert student_client.post(u["rate"], {"token": token, "rating": "3"}).status_code == 404
    assert not Review.objects.exists()


def test_other_students_private_deck_cannot_be_studied_or_rated(student_client, other_student):
    private = make_deck("Bob's", owner=other_student, is_public=False)
    p = urls(private)
    assert student_client.get(p["study"]).status_code == 404
    assert student_client.get(p["flip"], {"token": "x"}).status_code == 404
    assert student_client.post(p["rate"], {"token": "x", "rating": "3"}).status_code == 404
    assert student_client.post(p["undo"]).status_code == 404


def test_rating_without_csrf_token_is_403(student, u):
    client = Client(enforce_csrf_checks=True)
    client.force_login(student)
    token = token_in(client.get(u["study"]))
    assert client.post(u["rate"], {"token": token, "rating": "3"}).status_code == 403
    assert not Review.objects.exists()


def test_htmx_swaps_send_the_csrf_token_in_the_header_the_page_gives(student, u):
    """Full pages carry the token in each form (no JavaScript needed); htmx swaps leave it
    out, since htmx sends it with every request from the page's hx-headers."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(student)
    page = client.get(u["study"])
    html = page.content.decode()
    assert html.count('name="csrfmiddlewaretoken"') == 2  # the log-out and undo forms
    header = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    flipped = client.get(u["flip"], {"token": token_in(page)}, **HX)
    assert "csrfmiddlewaretoken" not in flipped.content.decode()
    rated = client.post(
        u["rate"], {"token": token_in(flipped), "rating": "4"}, HTTP_X_CSRFTOKEN=header, **HX
    )
    assert rated.status_code == 200
    assert Review.objects.filter(user=student, rating=4).count() == 1


def test_undo_restores_the_card_and_shows_it_again(student_client, student, u):
    token = token_in(student_client.get(u["study"]))
    student_client.post(u["rate"], {"token": token, "rating": "4"}, **HX)
    response = student_client.post(u["undo"], **HX)
    html = response.content.decode()
    assert "Question 1" in html
    assert "undone" in html
    assert not Review.objects.exists()
    assert CardProgress.objects.get(user=student, card__front="Question 1").state == State.NEW


def test_undo_without_htmx_redirects_to_the_undone_card(student_client, u):
    token = token_in(student_client.get(u["study"]))
    student_client.post(u["rate"], {"token": token, "rating": "5"})
    response = student_client.post(u["undo"])
    assert response.status_code == 302
    assert "Question 1" in student_client.get(response.url).content.decode()


def test_undo_with_nothing_to_undo_says_so(student_client, u):
    student_client.get(u["study"])
    assert "nothing to undo" in student_client.post(u["undo"], **HX).content.decode()


def test_done_state_says_when_next_card_is_due(student_client, u):
    for _ in range(3):
        token = token_in(student_client.get(u["study"]))
        student_client.post(u["rate"], {"token": token, "rating": "5"})
    html = student_client.get(u["study"]).content.decode()
    assert "All done for now" in html
    assert "The next card is due in" in html
    assert 'href="/"' in html


def test_done_state_says_when_daily_new_limit_stops(student_client, student, u):
    student_client.post(
        "/settings/",
        {"desired_retention": "0.9", "new_per_day": "1", "max_reviews_per_day": "200",
         "time_zone": "UTC", "day_start_hour": "4"},
    )  # fmt: skip
    token = token_in(student_client.get(u["study"]))
    student_client.post(u["rate"], {"token": token, "rating": "5"})
    html = student_client.get(u["study"]).content.decode()
    assert "All done for now" in html
    assert "limit of new cards" in html


def test_first_time_explainer_only_before_first_rating(student_client, u):
    response = student_client.get(u["study"])
    assert "How studying works" in response.content.decode()
    student_client.post(u["rate"], {"token": token_in(response), "rating": "5"})
    assert "How studying works" not in student_client.get(u["study"]).content.decode()


def test_markdown_is_rendered_and_sanitised(student_client, student):
    deck = make_deck("Markdown", cards=0)
    Card.objects.create(
        deck=deck, position=1, front="**bold** line\nnext <script>alert(1)</script>", back="b"
    )
    html = student_client.get(urls(deck)["study"]).content.decode()
    assert "<strong>bold</strong> line<br>" in html
    assert "<script>alert(1)" not in html


@pytest.mark.parametrize("size", [10, 2000])
def test_study_step_query_count_is_constant(student_client, student, size,
                                            django_assert_num_queries):  # fmt: skip
    """Flip: session with its user, deck with settings and the card's progress (it swaps
    in the card alone, so it counts nothing). Rate: session with its user, deck with
    settings and the card's progress, the write, today's and the queue's counts, the
    one-statement queue.
    The write is one statement on PostgreSQL, and a savepoint, update, insert and release
    on SQLite."""
    deck = make_deck("Sized", cards=size)
    p = urls(deck)
    token = token_in(student_client.get(p["study"]))
    with django_assert_num_queries(2):
        student_client.get(p["flip"], {"token": token}, **HX)
    with django_assert_num_queries(5 if connection.vendor == "postgresql" else 8):
        student_client.post(p["rate"], {"token": token, "rating": "3"}, **HX)
