"""Query budgets: every page in the benchmark (issue 8) runs an exact number of SQL
statements, the same for a tiny collection and a larger one.

Timings live in ``make bench``; these counts are what ``make test`` can check on any
machine, so a page that starts to query per card, per deck or per student (or gains a
query) fails here. The counts are exact on purpose: when a change really does add or
remove a query, update the number in BUDGETS and say why in the commit.

Counts include the session read of a logged-in request (one statement, which brings the
user's row along: studyapp.sessions) and, for writes, the SAVEPOINT/RELEASE pair that
the rating's transaction becomes inside a test.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse

from decks import services
from decks.models import Card, Deck
from tests.conftest import NOW, make_deck, make_user

BUDGETS = {
    "home": 5,
    "deck_page": 7,  # the page's ids sorted alone, then its 100 rows with their cards
    "study_page": 6,
    "flip": 2,  # the card alone: the page's counts still stand
    # PostgreSQL writes the review and the progress in one statement (a WITH … UPDATE);
    # SQLite needs UPDATE and INSERT in a transaction (SAVEPOINT/RELEASE inside a test).
    "rate": 5 if connection.vendor == "postgresql" else 8,
    "stats": 8,  # with its whole-history figures cached by the first request
    "class_dashboard": 6,  # with the hardest cards cached by the first request
    "export_reviews": 4,  # with the names and questions looked up once, not per row
    "export_cards": 2,
}

# (decks, cards per deck, reviews per deck, class students)
SIZES = {
    "tiny": (1, 3, 2, 1),
    "larger": (4, 120, 150, 6),
}
HTMX = {"HTTP_HX_REQUEST": "true"}
TOKEN = re.compile(r'name="token" value="([^"]+)"')


def _history(user, deck: Deck, reviews: int) -> None:
    """``reviews`` ratings through the real write path, spread over a few days."""
    services.ensure_progress(user, deck)
    card_ids = list(
        Card.objects.filter(deck=deck).order_by("position").values_list("id", flat=True)
    )
    for i in range(reviews):
        card_id = card_ids[i % len(card_ids)]
        services.record_review(
            user, card_id, 1 + (i * 7) % 5, NOW + timedelta(hours=i), time_taken_ms=4000
        )


@pytest.fixture(params=list(SIZES))
def collection(request, db):
    """A student with ``decks`` public decks and a history in each, and classmates with a
    history in the first deck."""
    decks, cards, reviews, classmates = SIZES[request.param]
    student = make_user("alice")
    owned = [make_deck(f"Deck {i}", cards=cards) for i in range(decks)]
    for deck in owned:
        _history(student, deck, reviews)
    for i in range(classmates):
        _history(make_user(f"classmate{i}"), owned[0], reviews)
    return student, owned


@pytest.fixture
def logged_in(client, collection):
    student, decks = collection
    client.force_login(student)
    return client, student, decks


def _consume(response) -> None:
    """A streamed response runs its queries while it is read."""
    if response.streaming:
        b"".join(response.streaming_content)


def _get(client, django_assert_num_queries, budget: str, url: str, **extra):
    client.get(url, **extra)  # first request: templates compile, caches warm
    with django_assert_num_queries(BUDGETS[budget]):
        response = client.get(url, **extra)
        _consume(response)
    assert response.status_code == 200
    return response


def test_home(logged_in, django_assert_num_queries):
    client, _, _ = logged_in
    _get(client, django_assert_num_queries, "home", reverse("home"))


def test_deck_page(logged_in, django_assert_num_queries):
    client, _, decks = logged_in
    _get(client, django_assert_num_queries, "deck_page", reverse("deck_detail", args=[decks[0].pk]))


def test_study_page(logged_in, django_assert_num_queries):
    client, _, decks = logged_in
    _get(client, django_assert_num_queries, "study_page", reverse("study", args=[decks[0].pk]))


def test_flip_and_rate(logged_in, django_assert_num_queries):
    client, _, decks = logged_in
    study = reverse("study", args=[decks[0].pk])
    token = TOKEN.search(client.get(study).content.decode()).group(1)
    flip = reverse("study_flip", args=[decks[0].pk])
    _get(client, django_assert_num_queries, "flip", flip, data={"token": token}, **HTMX)
    with django_assert_num_queries(BUDGETS["rate"]):
        response = client.post(
            reverse("study_rate", args=[decks[0].pk]), {"token": token, "rating": 4}, **HTMX
        )
    assert response.status_code == 200
    assert TOKEN.search(response.content.decode()), "the next question follows the rating"


def test_stats(logged_in, django_assert_num_queries):
    client, _, _ = logged_in
    _get(client, django_assert_num_queries, "stats", reverse("stats"))


def test_class_dashboard(client, collection, django_assert_num_queries):
    _, decks = collection
    client.force_login(make_user("teacher", is_staff=True))
    url = reverse("class_dashboard", args=[decks[0].pk])
    _get(client, django_assert_num_queries, "class_dashboard", url)


@pytest.mark.parametrize("kind", ["reviews", "cards"])
def test_exports(logged_in, django_assert_num_queries, kind):
    client, _, _ = logged_in
    url = reverse("export_progress", args=[kind])
    response = _get(client, django_assert_num_queries, f"export_{kind}", url)
    assert response["Content-Type"].startswith("text/csv")
