"""Importing Anki packages into the app: decks, cards, images and replayed history."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from decks import scheduler, services
from decks.anki_import import EASE_TO_RATING
from decks.apkg import read_package
from decks.models import Card, CardProgress, Deck, Review, State, StudySettings
from tests import apkg_fixtures as fx

pytest.importorskip("anki")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> fx.BuiltCollection:
    return fx.build_anki_collection(tmp_path_factory.mktemp("anki-import"))


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }


def upload(client, data: bytes, name: str = "deck.apkg"):
    return client.post("/decks/import/", {"file": SimpleUploadedFile(name, data)})


def answers(built: fx.BuiltCollection) -> list[tuple]:
    return [row for row in built.revlog if row[4] in (0, 1, 2) and row[2] in EASE_TO_RATING]


def test_student_import_brings_cards_decks_and_history(student_client, student, built):
    response = upload(student_client, built.apkg)
    assert response.status_code == 302
    package = read_package(built.apkg)
    assert Card.objects.count() == len(package.cards)
    assert set(Deck.objects.values_list("title", flat=True)) == {
        "Languages::Spanish",
        "Geography",
    }
    assert set(Deck.objects.values_list("owner", "is_public")) == {(student.pk, False)}
    assert Review.objects.filter(user=student).count() == len(answers(built))
    page = student_client.get(response.url).content.decode()
    assert "reviews replayed into your history" in page
    assert "1 log entries skipped" in page


def test_history_is_mapped_and_replayed_as_live_reviews(student_client, student, built):
    upload(student_client, built.apkg)
    card = Card.objects.get(front__startswith="hola")
    rows = [r for r in answers(built) if r[0] == built.card_ids["basic"]]
    fsrs = services.scheduler_for(StudySettings.for_user(student), fuzz=False)
    state = scheduler.CardState()
    for _cid, at_ms, ease, _taken, _kind in rows:
        at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        state = scheduler.review(state, EASE_TO_RATING[ease], at, fsrs).after
    progress = CardProgress.objects.get(user=student, card=card)
    assert (progress.state, progress.due, progress.stability) == (
        state.state, state.due, state.stability,
    )  # fmt: skip
    assert progress.reps == len(rows)
    assert progress.lapses == 1
    history = list(Review.objects.filter(card=card).order_by("reviewed_at"))
    assert [r.rating for r in history] == [EASE_TO_RATING[r[2]] for r in rows]
    assert [r.time_taken_ms for r in history] == [r[3] for r in rows]
    assert history[3].retrievability is not None


def test_suspended_card_stays_out_of_the_queue(student_client, student, built):
    upload(student_client, built.apkg)
    assert CardProgress.objects.filter(user=student, state=State.SUSPENDED).count() == 1


def test_images_are_stored_and_served(student_client, built, media_root):
    upload(student_client, built.apkg)
    card = Card.objects.get(front__startswith="What animal")
    assert "![](/media/anki/" in card.front
    url = card.front.split("](")[1].split(")")[0]
    assert student_client.get(url).status_code == 200
    html = student_client.get(f"/decks/{card.deck_id}/study/?card={card.pk}").content.decode()
    assert f'<img src="{url}" alt="">' in html


def test_reimport_updates_in_place_and_keeps_progress(student_client, student, built):
    upload(student_client, built.apkg)
    cards, reviews = Card.objects.count(), Review.objects.count()
    Card.objects.filter(front__startswith="hola").update(front="edited here")
    response = upload(student_client, built.apkg)
    assert response.status_code == 302
    assert (Card.objects.count(), Review.objects.count()) == (cards, reviews)
    assert Card.objects.filter(front__startswith="hola").exists()
    assert CardProgress.objects.get(card__front__startswith="hola").reps == 6


def test_staff_import_brings_content_without_history(client, staff, built):
    client.force_login(staff)
    response = client.post(
        "/admin/decks/deck/import/",
        {"file": SimpleUploadedFile("shared.apkg", built.apkg), "is_public": "on"},
    )
    assert response.status_code == 302
    assert Card.objects.exists()
    assert not Review.objects.exists()
    assert set(Deck.objects.values_list("is_public", flat=True)) == {True}


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04 truncated zip",
        fx.zip_bytes({"collection.anki21b": b"not zstd at all", "media": b""}),
    ],
    ids=["truncated", "corrupt-collection"],
)
def test_corrupt_package_is_refused_and_saves_nothing(student_client, data):
    response = upload(student_client, data)
    assert response.status_code == 400
    assert "Nothing was imported" in response.content.decode()
    assert not Deck.objects.exists() and not Review.objects.exists()


def test_command_imports_with_owner_and_fit_works_on_the_history(student, built, tmp_path,
                                                                  settings):  # fmt: skip
    path = tmp_path / "mine.apkg"
    path.write_bytes(built.legacy_apkg)
    out = StringIO()
    call_command("import_deck", str(path), "--owner", "alice", stdout=out)
    assert "reviews replayed" in out.getvalue()
    settings.STUDYAPP_FIT_MIN_REVIEWS = 5
    settings.STUDYAPP_FIT_MIN_CARDS = 2
    out = StringIO()
    call_command("fit_memory_model", "--user", "alice", stdout=out)
    assert "alice:" in out.getvalue()
    assert StudySettings.objects.get(user=student).model_message
