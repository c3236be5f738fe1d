from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from decks.models import StudySettings
from tests.conftest import make_deck


@pytest.mark.parametrize("url", ["/", "/settings/", "/decks/1/", "/decks/1/study/"])
def test_anonymous_is_sent_to_login(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/?next=")


def test_login_page_renders_with_signup_link(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'href="/accounts/signup/"' in response.content


def test_login_and_logout(client, student):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response.url == "/"
    assert client.get("/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_home_lists_public_and_own_decks_only(student_client, student, other_student):
    make_deck("Shared deck", is_public=True)
    make_deck("My private deck", owner=student, is_public=False)
    make_deck("Bob's private deck", owner=other_student, is_public=False)
    make_deck("Staff draft", is_public=False)
    content = student_client.get("/").content.decode()
    assert "Shared deck" in content
    assert "My private deck" in content
    assert "Bob&#x27;s private deck" not in content
    assert "Staff draft" not in content


def test_home_shows_card_and_queue_counts(student_client):
    make_deck("Counted", cards=7)
    content = student_client.get("/").content.decode()
    assert "7 cards" in content
    assert "7 new" in content


def test_deck_page_lists_cards_in_order(student_client, deck):
    content = student_client.get(reverse("deck_detail", args=[deck.pk])).content.decode()
    assert content.index("Question 1") < content.index("Question 2") < content.index("Question 3")


def test_other_students_private_deck_is_404(student_client, other_student):
    private = make_deck("Bob's", owner=other_student, is_public=False)
    for name in ["deck_detail", "study"]:
        assert student_client.get(reverse(name, args=[private.pk])).status_code == 404


def test_missing_deck_is_404(student_client):
    assert student_client.get("/decks/999999/").status_code == 404


def test_staff_see_every_deck(client, staff, other_student):
    private = make_deck("Bob's", owner=other_student, is_public=False)
    client.force_login(staff)
    assert client.get(reverse("deck_detail", args=[private.pk])).status_code == 200


def test_signup_creates_account_and_logs_in(client, db):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "password1": "a-long-Passphrase-42",
            "password2": "a-long-Passphrase-42",
        },
    )
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="newbie").exists()
    assert client.get("/").status_code == 200


def test_signup_rejects_weak_password(client, db):
    response = client.post(
        "/accounts/signup/", {"username": "newbie", "password1": "123", "password2": "123"}
    )
    assert response.status_code == 200
    assert b"too short" in response.content
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_signup_can_be_switched_off(client, db, settings):
    settings.SIGNUP_ENABLED = False
    assert client.get("/accounts/signup/").status_code == 404
    assert b"/accounts/signup/" not in client.get("/accounts/login/").content


def test_settings_page_saves_valid_values(student_client, student):
    response = student_client.post(
        "/settings/",
        {
            "desired_retention": "0.85",
            "new_per_day": "10",
            "max_reviews_per_day": "100",
            "time_zone": "America/Los_Angeles",
            "day_start_hour": "5",
        },
    )
    assert response.status_code == 302
    saved = StudySettings.objects.get(user=student)
    assert (saved.desired_retention, saved.new_per_day, saved.time_zone) == (
        0.85, 10, "America/Los_Angeles",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("desired_retention", "0.5"),
        ("desired_retention", "1"),
        ("new_per_day", "-1"),
        ("new_per_day", "10000"),
        ("time_zone", "Mars/Olympus"),
        ("day_start_hour", "24"),
    ],
)
def test_settings_page_rejects_invalid_values(student_client, student, field, value):
    data = {
        "desired_retention": "0.9",
        "new_per_day": "20",
        "max_reviews_per_day": "200",
        "time_zone": "UTC",
        "day_start_hour": "4",
        field: value,
    }
    response = student_client.post("/settings/", data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert not StudySettings.objects.filter(user=student).exists()
