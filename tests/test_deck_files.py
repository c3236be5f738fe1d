from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decks import services
from decks.importers import ParsedCard, ParsedDeck
from decks.models import Card, Deck
from tests.conftest import make_deck

DATA = Path(__file__).resolve().parent / "data"
SEED = Path(__file__).resolve().parents[1] / "decks" / "demo" / "cnn_week2.txt"


def upload(path: Path | str, data: bytes | None = None) -> SimpleUploadedFile:
    name = Path(path).name
    return SimpleUploadedFile(name, data if data is not None else Path(path).read_bytes())


def cards_of(deck: Deck) -> list[tuple[str, str, str]]:
    return list(deck.cards.order_by("position").values_list("front", "back", "tags"))


@pytest.mark.parametrize(
    "name", ["sample.csv", "sample.tsv", "sample_anki.txt", "sample_quizlet.txt"]
)
def test_student_imports_a_private_deck_in_each_format(student_client, student, name):
    response = student_client.post("/decks/import/", {"file": upload(DATA / name)})
    deck = Deck.objects.get()
    assert response.status_code == 302
    assert response.url == f"/decks/{deck.pk}/"
    assert (deck.owner, deck.is_public) == (student, False)
    assert deck.cards.count() > 0
    assert "Imported" in student_client.get(response.url).content.decode()


def test_imported_private_deck_is_invisible_to_others(client, student_client, other_student):
    student_client.post("/decks/import/", {"file": upload(DATA / "sample.csv")})
    deck = Deck.objects.get()
    client.force_login(other_student)
    assert client.get(f"/decks/{deck.pk}/").status_code == 404


def test_bad_upload_shows_the_line_and_saves_nothing(student_client):
    make_deck("Existing")
    bad = b"front,back\nq1,a1\nq2,a2,tag,extra\n"
    response = student_client.post("/decks/import/", {"file": upload("bad.csv", bad)})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Line 3" in html and "Nothing was imported" in html
    assert (Deck.objects.count(), Card.objects.count()) == (1, 3)


def test_upload_over_the_size_limit_is_refused(student_client, settings):
    settings.STUDYAPP_MAX_IMPORT_BYTES = 1000
    data = b"front,back\n" + b"q,a\n" * 500
    response = student_client.post("/decks/import/", {"file": upload("big.csv", data)})
    assert response.status_code == 400
    assert "The file is 2,011 bytes; the limit is 1,000 bytes" in response.content.decode()
    assert not Deck.objects.exists()


def test_deck_over_the_card_limit_is_refused(student_client, settings):
    settings.STUDYAPP_MAX_IMPORT_CARDS = 3
    data = b"front,back\n" + b"".join(b"q%d,a%d\n" % (i, i) for i in range(5))
    response = student_client.post("/decks/import/", {"file": upload("many.csv", data)})
    assert response.status_code == 400
    assert "more than 3 cards" in response.content.decode()
    assert not Deck.objects.exists()


def test_chosen_format_overrides_detection(student_client):
    data = b"term\tdefinition, with comma\n"
    student_client.post("/decks/import/", {"file": upload("q.txt", data), "format": "quizlet"})
    assert cards_of(Deck.objects.get()) == [("term", "definition, with comma", "")]


def test_import_command_reads_other_formats(db):
    out = StringIO()
    call_command("import_deck", str(DATA / "sample_anki.txt"), "--title", "Anki", stdout=out)
    deck = Deck.objects.get(title="Anki")
    assert deck.cards.exclude(tags="").exists()
    assert "Imported" in out.getvalue()


def test_admin_import_accepts_csv(client, staff):
    client.force_login(staff)
    response = client.post(
        "/admin/decks/deck/import/",
        {"file": upload(DATA / "sample.csv"), "title": "From admin", "is_public": "on"},
    )
    assert response.status_code == 302
    assert Deck.objects.get().title == "From admin"


@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_export_then_import_gives_the_same_deck(student_client, student, fmt):
    services.import_deck_file(SEED.read_bytes(), is_public=True)
    original = Deck.objects.get()
    response = student_client.get(f"/decks/{original.pk}/export.{fmt}")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    copy, _ = services.import_deck_file(response.content, owner=student)
    assert copy.title == (original.title if fmt == "txt" else "Imported deck")
    assert cards_of(copy) == cards_of(original)


def test_export_of_another_students_private_deck_is_404(student_client, other_student):
    private = make_deck("Bob's", owner=other_student, is_public=False)
    assert student_client.get(f"/decks/{private.pk}/export.csv").status_code == 404


def test_text_export_of_unrepresentable_card_says_use_csv(student_client):
    deck = make_deck("Awkward", cards=0)
    Card.objects.create(deck=deck, front="line\nA\nmore", back="b", position=1)
    response = student_client.get(f"/decks/{deck.pk}/export.txt")
    assert response.status_code == 409
    assert b"Export it as CSV" in response.content


field = (
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from(",\"\t\n'=+-@"),
        min_size=1,
        max_size=40,
    )
    .map(lambda text: "\n".join(line.strip() for line in text.split("\n")).strip())
    .filter(bool)
)
tags = st.lists(st.from_regex(r"[a-z0-9_:-]{1,8}", fullmatch=True), max_size=3, unique=True)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(field, field, tags), min_size=1, max_size=8))
def test_csv_round_trip_through_the_app(student_client, student, generated):
    parsed = ParsedDeck(
        title="Generated",
        cards=[
            ParsedCard(front=f, back=b, line=i, number=i, tags=" ".join(t))
            for i, (f, b, t) in enumerate(generated, start=1)
        ],
        skipped=[],
    )
    deck = services.import_deck(parsed, owner=student)
    exported = student_client.get(f"/decks/{deck.pk}/export.csv").content
    copy, _ = services.import_deck_file(exported, owner=student)
    assert cards_of(copy) == cards_of(deck)
