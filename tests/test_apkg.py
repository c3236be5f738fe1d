"""decks.apkg: reading Anki packages made by Anki itself (the ``anki`` library) and by genanki.

No database: the reader is pure, so none of these tests asks for the ``db`` fixture.
"""

from __future__ import annotations

import io
import sqlite3
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from decks.apkg import (
    REVLOG_LEARN,
    REVLOG_MANUAL,
    REVLOG_RELEARN,
    REVLOG_REVIEW,
    ApkgCard,
    ApkgPackage,
    PackageError,
    _html_to_text,
    _parse_clozes,
    _render_clozes,
    is_anki_package,
    read_package,
)
from tests import apkg_fixtures as fx


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> fx.BuiltCollection:
    return fx.build_anki_collection(tmp_path_factory.mktemp("anki"))


@pytest.fixture(scope="session")
def current(built) -> ApkgPackage:
    return read_package(built.apkg)


@pytest.fixture(scope="session")
def genanki_apkg(tmp_path_factory) -> bytes:
    return fx.build_genanki_package(tmp_path_factory.mktemp("genanki"))


def cards_of(package: ApkgPackage, front: str) -> list[ApkgCard]:
    """The cards of the note whose first card has this front."""
    first = next(card for card in package.cards if card.front == front)
    return sorted(
        (card for card in package.cards if card.note_guid == first.note_guid),
        key=lambda card: card.ord,
    )


def card_with(package: ApkgPackage, card_id: int) -> ApkgCard:
    return next(card for card in package.cards if card.anki_card_id == card_id)


def review_rows(package: ApkgPackage) -> list[tuple[int, int, int, int, int]]:
    return [
        (r.anki_card_id, r.reviewed_at_ms, r.ease, r.duration_ms, r.kind) for r in package.reviews
    ]


# --- detection ----------------------------------------------------------------------------------


def test_packages_are_detected_by_content(built, genanki_apkg):
    for data in (built.apkg, built.legacy_apkg, built.colpkg, genanki_apkg):
        assert is_anki_package(data)
    assert not is_anki_package(b"")
    assert not is_anki_package(b"front,back\nhola,hello\n")
    assert not is_anki_package(fx.zip_bytes({"notes.csv": b"a,b"}))
    assert not is_anki_package(built.apkg[:1000])


# --- the current format, made by Anki ----------------------------------------------------------


def test_current_export_carries_the_stub_and_the_real_collection(built):
    names = set(fx.members(built.apkg))
    assert {"collection.anki21b", "collection.anki2", "media", "meta"} <= names


def test_card_counts_per_note_type(current):
    assert len(current.cards) == 12
    cards_per_note = Counter(card.note_guid for card in current.cards)
    # Basic x4 (one is the HTML note) and 2 Vocab: 1 card each; reversed, optional reversed
    # with "Add Reverse" and the two-deletion cloze: 2 each; optional reversed without it: 1.
    assert sorted(cards_per_note.values()) == [1, 1, 1, 1, 1, 1, 2, 2, 2]


def test_basic_card_text_and_tags(current):
    (card,) = cards_of(current, "hola **amigo**")
    assert card.back == "hello\nfriend"
    assert card.tags == "greeting spanish"
    assert card.deck_name == "Languages::Spanish"
    assert card.ord == 0


def test_reversed_note_gives_the_cards_anki_made(current):
    forward, backward = cards_of(current, "perro")
    assert (forward.ord, forward.front, forward.back) == (0, "perro", "dog")
    assert (backward.ord, backward.front, backward.back) == (1, "dog", "perro")


def test_optional_reversed_follows_the_existing_cards(current):
    with_reverse = cards_of(current, "rojo")
    assert [(c.front, c.back) for c in with_reverse] == [("rojo", "red"), ("red", "rojo")]
    assert [(c.front, c.back) for c in cards_of(current, "azul")] == [("azul", "blue")]


def test_cloze_hides_one_deletion_per_card(current):
    first, second = cards_of(current, "[...] is the capital of France")
    assert first.ord == 0
    assert first.back == "**Paris** is the capital of France\nEurope"
    # The hint replaces the dots; the other deletion is plain text.
    assert second.ord == 1
    assert second.front == "Paris is the capital of [country]"
    assert second.back == "Paris is the capital of **France**\nEurope"
    assert first.tags == second.tags == "geo"
    assert first.deck_name == "Geography"


def test_other_note_types_render_the_template_subset(current):
    # {{#Example}} shown when the field is filled, {{^Example}} when it is empty, and
    # {{type:Meaning}} dropped; the answer is what follows <hr id=answer>.
    (with_example,) = cards_of(current, "casa\n*una casa grande*")
    assert with_example.back == "house"
    (without,) = cards_of(current, "mesa")
    assert without.back == "table\n(no example)"


def test_html_becomes_markdown_and_scripts_go(current):
    (card,) = cards_of(current, "line one\nline two")
    assert card.back == "para\n\ngraph\n\n5 < 6"
    assert all("alert" not in c.front + c.back for c in current.cards)


def test_media_is_the_referenced_files_bytes(current):
    (card,) = cards_of(current, "What animal is this?\n![](gato.png)")
    assert card.back == "a *cat* & nothing else"
    assert current.media == {"gato.png": fx.PNG_BYTES}


def test_suspended_flag(current, built):
    suspended = [card.anki_card_id for card in current.cards if card.suspended]
    assert suspended == [built.card_ids["backward"]]


def test_positions_are_a_stable_order_following_anki(current, built):
    assert [card.position for card in current.cards] == list(range(len(current.cards)))
    # Anki's new-card order is creation order here, kept for the cards already studied.
    order = [card.anki_card_id for card in current.cards]
    ids = built.card_ids
    assert order.index(ids["basic"]) < order.index(ids["picture"]) < order.index(ids["forward"])
    assert order.index(ids["forward"]) < order.index(ids["cloze"])


def test_reviews_are_every_revlog_row_in_time_order(current, built):
    assert review_rows(current) == built.revlog
    assert [r.reviewed_at_ms for r in current.reviews] == sorted(
        r.reviewed_at_ms for r in current.reviews
    )


def test_review_history_values(current, built):
    history = [r for r in current.reviews if r.anki_card_id == built.card_ids["basic"]]
    assert [r.ease for r in history] == [1, 3, 3, 3, 1, 3]
    assert [r.kind for r in history] == [
        REVLOG_LEARN,
        REVLOG_LEARN,
        REVLOG_LEARN,
        REVLOG_REVIEW,
        REVLOG_REVIEW,  # the lapse: an Again on a review card
        REVLOG_RELEARN,
    ]
    assert [r.reviewed_at_ms - fx.T0_MS for r in history] == [
        0,
        fx.MINUTE_MS,
        11 * fx.MINUTE_MS,
        4 * fx.DAY_MS,
        10 * fx.DAY_MS,
        10 * fx.DAY_MS + 10 * fx.MINUTE_MS,
    ]
    assert [r.duration_ms for r in history] == [4000, 3000, 2500, 2000, 6000, 1500]


def test_set_due_date_is_a_manual_row(current, built):
    (manual,) = [r for r in current.reviews if r.anki_card_id == built.card_ids["forward"]]
    # Anki 26.9 logs "set due date" as revlog type 4 (Manual) with ease 0.
    assert manual.kind == REVLOG_MANUAL
    assert manual.ease == 0


# --- other layouts ---------------------------------------------------------------------------


def test_anki21b_is_preferred_over_the_stub(built):
    # The stub alone really is a different collection: one "please update" note.
    stub_only = read_package(fx.replace_members(built.apkg, {"collection.anki21b": None}))
    assert len(stub_only.cards) == 1
    assert "update" in stub_only.cards[0].front.lower()
    package = read_package(built.apkg)
    assert len(package.cards) == 12
    assert not any("update" in card.front.lower() for card in package.cards)


def test_legacy_export_reads_the_same(built, current):
    legacy = read_package(built.legacy_apkg)
    assert "collection.anki21" in fx.members(built.legacy_apkg)
    assert legacy.cards == current.cards
    assert legacy.reviews == current.reviews
    assert legacy.media == current.media


def test_colpkg_gives_one_deck_name_per_anki_deck(built):
    package = read_package(built.colpkg)
    # The empty "Default" deck and the "Languages" parent hold no cards of their own.
    assert package.deck_names == ["Geography", "Languages::Spanish"]
    assert len(package.cards) == 12
    # The collection's media folder also holds a file no card uses: it is not returned.
    assert "unused.gif" in fx.media_names(built.colpkg)
    assert package.media == {"gato.png": fx.PNG_BYTES}


def test_genanki_package(genanki_apkg):
    package = read_package(genanki_apkg)
    assert set(fx.members(genanki_apkg)) == {"collection.anki2", "media", "0"}
    assert package.deck_names == ["Genanki Deck"]
    assert [(c.note_guid, c.ord, c.front, c.back) for c in package.cards] == [
        ("guid-basic", 0, "Capital of Italy?", "Rome ![](<my cat.jpg>)"),
        ("guid-rev", 0, "uno", "one"),
        ("guid-rev", 1, "one", "uno"),
        ("guid-cloze", 0, "[...] is in Italy", "**Rome** is in Italy"),
        ("guid-cloze", 1, "Rome is in [...]", "Rome is in **Italy**"),
    ]
    assert package.cards[0].tags == "italy"
    assert package.media == {"my cat.jpg": fx.JPEG_BYTES}
    assert package.reviews == []


def test_large_package(tmp_path):
    package = read_package(fx.build_large_package(tmp_path, notes=2_000, reviews=20_000))
    assert len(package.cards) == 2_000
    assert len(package.reviews) == 20_000
    assert package.cards[7].front == "question **7**"
    assert package.cards[7].back == "answer\nnumber 7"
    assert package.deck_names == ["Big::Deck"]


# --- broken and hostile packages ------------------------------------------------------------


def _sqlite_bytes(tmp_path: Path, sql: str) -> bytes:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()
    return path.read_bytes()


def _flip_byte_inside(package: bytes, member: str) -> bytes:
    """The package with one byte of a member's stored data changed (its CRC no longer fits)."""
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        info = archive.getinfo(member)
    # Local header: 30 bytes, then the name and the extra field.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    target = start + info.compress_size // 2
    return package[:target] + bytes([package[target] ^ 0xFF]) + package[target + 1 :]


def test_not_a_zip():
    with pytest.raises(PackageError, match="not a zip"):
        read_package(b"front,back\nhola,hello\n")


def test_truncated_zip(built):
    with pytest.raises(PackageError, match="truncated"):
        read_package(built.apkg[: len(built.apkg) // 2])


def test_damaged_member(built):
    with pytest.raises(PackageError, match="collection.anki21b"):
        read_package(_flip_byte_inside(built.apkg, "collection.anki21b"))


def test_damaged_media_file(built):
    with pytest.raises(PackageError, match="media file 'gato.png' .*damaged"):
        read_package(_flip_byte_inside(built.apkg, "0"))


def test_no_collection_inside():
    with pytest.raises(PackageError, match="no Anki collection"):
        read_package(fx.zip_bytes({"media": b"{}", "0": b"x"}))


def test_anki21b_that_is_not_zstd(built):
    plain = fx.members(built.legacy_apkg)["collection.anki21"]
    with pytest.raises(PackageError, match="collection.anki21b is not a valid zstd stream"):
        read_package(fx.replace_members(built.apkg, {"collection.anki21b": plain}))


def test_anki21b_with_a_broken_zstd_stream(built):
    broken = fx.zstd(b"SQLite format 3\x00" + bytes(4000))[:-20] + b"\x00" * 20
    with pytest.raises(PackageError, match="collection.anki21b"):
        read_package(fx.replace_members(built.apkg, {"collection.anki21b": broken}))


@pytest.mark.parametrize(
    "content",
    [b"SQLite format 3\x00" + b"\xff" * 4000, b"this is not a database at all" * 200],
    ids=["bad-header", "garbage"],
)
def test_corrupt_sqlite(built, content):
    with pytest.raises(PackageError, match="collection.anki21b is not a valid Anki collection"):
        read_package(fx.replace_members(built.apkg, {"collection.anki21b": fx.zstd(content)}))


def test_sqlite_that_is_not_an_anki_collection(built, tmp_path):
    other = _sqlite_bytes(tmp_path, "CREATE TABLE notes (id INTEGER); CREATE TABLE x (y);")
    with pytest.raises(PackageError, match="lacks the tables cards, col, revlog"):
        read_package(fx.replace_members(built.legacy_apkg, {"collection.anki21": other}))


def test_unsupported_schema(built):
    with pytest.raises(PackageError, match="schema 99, which is not supported"):
        read_package(fx.alter_legacy_collection(built.legacy_apkg, "UPDATE col SET ver = 99"))


def test_values_of_the_wrong_type(built):
    package = fx.alter_legacy_collection(built.legacy_apkg, "UPDATE notes SET flds = X'0102'")
    with pytest.raises(PackageError, match="collection.anki21 holds data Anki would not write"):
        read_package(package)


def test_broken_note_type_json(built):
    package = fx.alter_legacy_collection(built.legacy_apkg, "UPDATE col SET models = '[1]'")
    with pytest.raises(PackageError, match="note types or decks in collection.anki21"):
        read_package(package)


def test_declared_size_over_the_limit(built):
    with pytest.raises(PackageError, match="would expand to"):
        read_package(built.apkg, max_uncompressed=20_000)


def test_deflate_bomb():
    bomb = fx.zip_bytes({"collection.anki2": bytes(20 * 1024 * 1024)})
    with pytest.raises(PackageError, match="suspicious compression ratio"):
        read_package(bomb)


def test_zstd_bomb(built):
    # Small in the zip (declared sizes pass), huge once zstd expands it.
    bomb = fx.zstd(bytes(8 * 1024 * 1024))
    package = fx.replace_members(built.apkg, {"collection.anki21b": bomb})
    with pytest.raises(PackageError, match="collection.anki21b expands beyond the limit"):
        read_package(package, max_uncompressed=2 * 1024 * 1024)


def test_too_many_files(built):
    with pytest.raises(PackageError, match="more than the 3 allowed"):
        read_package(built.apkg, max_files=3)


@pytest.mark.parametrize(
    "name", ["../evil.png", "/etc/passwd", "..\\evil.png", "a/b.png", "x\x00.png", "..", "C:x"]
)
def test_path_tricks_in_current_media_map(built, name):
    package = fx.replace_members(built.apkg, {"media": fx.media_entries(["gato.png", name])})
    with pytest.raises(PackageError, match="media file name .* is not allowed"):
        read_package(package)


def test_path_tricks_in_legacy_media_map(built):
    package = fx.replace_members(built.legacy_apkg, {"media": b'{"0": "../../etc/cron.d/x"}'})
    with pytest.raises(PackageError, match=r"media file name '\.\./\.\./etc/cron\.d/x'"):
        read_package(package)


def test_unreadable_media_map(built):
    with pytest.raises(PackageError, match="media map"):
        read_package(fx.replace_members(built.legacy_apkg, {"media": b"\x01\x02 not json"}))


def test_media_map_built_by_anki_protobuf_is_read(built):
    # The reader's hand-written protobuf parsing agrees with Anki's own classes.
    renamed = fx.replace_members(built.apkg, {"media": fx.media_entries(["other.png"])})
    assert read_package(renamed).media == {}


# --- conversion details ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<b> bold </b>", "**bold**"),
        ("<b></b>x", "x"),
        ("<i>a<br>b</i>", "*a*\n*b*"),
        ("<strong><em>both</em></strong>", "***both***"),
        ("x<ul><li>one</li><li>two</li></ul>", "x\n- one\n- two"),
        ("<ol><li>one</li></ol>", "1. one"),
        ("a<div><br></div>b", "a\n\nb"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("a<br><br><br><br>b", "a\n\nb"),
        ("line\n  with   spaces", "line with spaces"),
        ("&lt;script&gt; &amp; caf&eacute;", "<script> & café"),
        ("<style>.x { color: red }</style>text", "text"),
        ("<span style='color:red'>red</span> <u>under</u>", "red under"),
        ("[sound:hello.mp3]hi", "hi"),
        ('<img src="a b.png">', "![](<a b.png>)"),
        ('<img src="javascript:alert(1)">ok', "ok"),
        ("<!-- note -->visible", "visible"),
        ("<b>unclosed", "**unclosed**"),
    ],
)
def test_html_to_markdown(html, text):
    assert _html_to_text(html, lambda name: name) == text


@pytest.mark.parametrize(
    "html",
    [
        "<div>" * 100_000 + "deep",
        "<rt>" * 100_000 + "deep",
        "<table>deep</table>" * 20_000,
        "<b>" * 100_000 + "deep",
    ],
    ids=["divs", "rt", "tables", "bold"],
)
def test_pathological_markup_stays_fast(html):
    # html5ever's cost grows with nesting for many tags; such fields skip it (minutes otherwise).
    started = time.perf_counter()
    assert "deep" in _html_to_text(html, lambda name: name)
    assert time.perf_counter() - started < 5


def test_pathological_nesting_in_clozes_and_templates():
    nodes = _parse_clozes("{{c1::" * 5_000 + "x" + "}}" * 5_000)
    assert _render_clozes(nodes, 1, question=True).startswith("[...]")


@pytest.mark.parametrize(
    ("source", "number", "question", "answer"),
    [
        ("{{c1::a {{c2::b}} c}} d", 1, "[...] d", "<b>a b c</b> d"),
        ("{{c1::a {{c2::b}} c}} d", 2, "a [...] c d", "a <b>b</b> c d"),
        ("{{c1,2::both}} and {{c2::two::hint}}", 2, "[...] and [hint]", None),
        ("{{c1::never closed", 1, "{{c1::never closed", None),
        ("stray }} brace", 1, "stray }} brace", None),
    ],
)
def test_cloze_rendering(source, number, question, answer):
    nodes = _parse_clozes(source)
    assert _render_clozes(nodes, number, question=True) == question
    if answer is not None:
        assert _render_clozes(nodes, number, question=False) == answer
