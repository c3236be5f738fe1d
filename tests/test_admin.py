from __future__ import annotations

from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from decks.models import Card, Deck
from tests.conftest import make_deck

SEED = Path(__file__).resolve().parents[1] / "decks" / "demo" / "cnn_week2.txt"
IMPORT_URL = "/admin/decks/deck/import/"


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/plain")


def test_staff_can_import_a_deck(client, staff):
    client.force_login(staff)
    assert client.get(IMPORT_URL).status_code == 200
    response = client.post(
        IMPORT_URL, {"file": upload("seed.txt", SEED.read_bytes()), "title": "", "is_public": "on"}
    )
    deck = Deck.objects.get()
    assert response.status_code == 302
    assert response.url == f"/admin/decks/deck/{deck.pk}/change/"
    assert deck.cards.count() == 12 and deck.is_public
    page = client.get(response.url).content.decode()
    assert "Imported 12 cards" in page and "Skipped card 13" in page


def test_import_errors_render_on_the_form_and_save_nothing(client, staff):
    client.force_login(staff)
    response = client.post(
        IMPORT_URL, {"file": upload("bad.txt", b"Title\n\n1\nQ\n\nquestion only"), "title": ""}
    )
    assert response.status_code == 200
    assert "Line " in response.content.decode()
    assert "Nothing was imported" in response.content.decode()
    assert not Deck.objects.exists()


def test_students_cannot_reach_admin_or_import(client, student):
    client.force_login(student)
    for url in ["/admin/", IMPORT_URL]:
        response = client.get(url)
        assert response.status_code == 302
        assert "/admin/login/" in response.url
    response = client.post(IMPORT_URL, {"file": upload("seed.txt", SEED.read_bytes())})
    assert response.status_code == 302
    assert not Deck.objects.exists()


def test_deck_admin_lists_card_counts_and_searches_card_text(client, staff):
    deck = make_deck("Biology", cards=4)
    Card.objects.create(deck=deck, front="mitochondria", back="powerhouse", position=5)
    make_deck("History", cards=2)
    client.force_login(staff)
    page = client.get("/admin/decks/deck/").content.decode()
    assert "Biology" in page and "History" in page and "Import deck" in page
    found = client.get("/admin/decks/deck/", {"q": "powerhouse"}).content.decode()
    assert "Biology" in found and "History" not in found
    change = client.get(f"/admin/decks/deck/{deck.pk}/change/").content.decode()
    assert change.index("Question 1") < change.index("Question 4") < change.index("mitochondria")


def test_card_admin_searches_and_filters_by_deck(client, staff):
    deck = make_deck("Biology", cards=2)
    make_deck("History", cards=2)
    client.force_login(staff)
    filtered = client.get("/admin/decks/card/", {"deck__id__exact": deck.pk})
    assert {c.deck_id for c in filtered.context["cl"].result_list} == {deck.pk}
    searched = client.get("/admin/decks/card/", {"q": "Answer 2"})
    assert searched.context["cl"].result_count == 2


def test_review_and_progress_admin_are_read_only(client, staff):
    client.force_login(staff)
    assert client.get("/admin/decks/review/").status_code == 200
    assert client.get("/admin/decks/review/add/").status_code == 403
    assert client.get("/admin/decks/cardprogress/add/").status_code == 403
