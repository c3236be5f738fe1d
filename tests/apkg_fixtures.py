"""Builders of Anki packages for tests/test_apkg.py, made by the real programs that write them.

The current format comes from the ``anki`` library itself (the code Anki's desktop app runs), the
older one from ``genanki`` (what most deck generators use). Both are test-only dependencies. The
crafted, broken packages are made here by hand from those real ones.

The import's speed on a package of 100,000 notes is timed by ``make bench`` (section I).
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

# A time well in the past (2024-01-01 10:00 UTC), so the answers made below sort before anything
# Anki stamps with the real clock (the manual reschedule).
T0_MS = 1_704_103_200_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000

# Small but real image files: the reader must hand back exactly these bytes.
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(64)) + b"\xff\xd9"
UNUSED_BYTES = b"GIF89a not referenced by any card"


@dataclass(frozen=True)
class BuiltCollection:
    apkg: bytes  # current format (legacy=False): collection.anki21b plus the stub
    legacy_apkg: bytes  # legacy=True: collection.anki21, JSON media map
    colpkg: bytes  # whole collection, current format
    # The collection's own revlog, (cid, id, ease, time, type) ordered by id, to compare with.
    revlog: list[tuple[int, int, int, int, int]]
    card_ids: dict[str, int]  # a label per interesting card


def _answer(col, card_id: int, rating: int, at_ms: int, taken_ms: int) -> None:
    # The GUI path (sched.answerCard) stamps the answer with the real clock; building the
    # answer ourselves lets the revlog carry the times the tests expect.
    card = col.get_card(card_id)
    card.start_timer()  # build_answer reads the timer; milliseconds_taken is overridden below
    states = col._backend.get_scheduling_states(card_id)
    answer = col.sched.build_answer(card=card, states=states, rating=rating)
    answer.answered_at_millis = at_ms
    answer.milliseconds_taken = taken_ms
    col.sched.answer_card(answer)


def build_anki_collection(workdir: Path) -> BuiltCollection:
    from anki.collection import Collection, ExportAnkiPackageOptions
    from anki.scheduler.v3 import CardAnswer

    workdir.mkdir(parents=True, exist_ok=True)
    col = Collection(str(workdir / "collection.anki2"))
    spanish = col.decks.id("Languages::Spanish")
    geography = col.decks.id("Geography")
    image = col.media.write_data("gato.png", PNG_BYTES)
    col.media.write_data("unused.gif", UNUSED_BYTES)

    def add(notetype: str, deck_id: int, fields: dict[str, str], tags: tuple[str, ...] = ()):
        note = col.new_note(col.models.by_name(notetype))
        for name, value in fields.items():
            note[name] = value
        note.tags = list(tags)
        col.add_note(note, deck_id)
        return note

    # A note type of our own, for the template subset: sections, inverted sections, type:.
    models = col.models
    vocab = models.new("Vocab")
    for name in ("Word", "Meaning", "Example"):
        models.add_field(vocab, models.new_field(name))
    template = models.new_template("Recognise")
    template["qfmt"] = "{{Word}}{{#Example}}<br><i>{{Example}}</i>{{/Example}}"
    template["afmt"] = (
        "{{FrontSide}}<hr id=answer>{{Meaning}}{{^Example}}<br>(no example){{/Example}}"
        "{{type:Meaning}}"
    )
    models.add_template(vocab, template)
    models.add(vocab)

    basic = add(
        "Basic",
        spanish,
        {"Front": "hola <b>amigo</b>", "Back": "hello<br>friend"},
        ("spanish", "greeting"),
    )
    picture = add(
        "Basic",
        spanish,
        {
            "Front": f'What animal is this?<div><img src="{image}"></div>',
            "Back": "a <i>cat</i> &amp; nothing else",
        },
        ("animals",),
    )
    reversed_note = add("Basic (and reversed card)", spanish, {"Front": "perro", "Back": "dog"})
    add(
        "Basic (optional reversed card)",
        spanish,
        {"Front": "rojo", "Back": "red", "Add Reverse": "y"},
    )
    add("Basic (optional reversed card)", spanish, {"Front": "azul", "Back": "blue"})
    cloze = add(
        "Cloze",
        geography,
        {
            "Text": "{{c1::Paris}} is the capital of {{c2::France::country}}",
            "Back Extra": "Europe",
        },
        ("geo",),
    )
    add(
        "Basic",
        geography,
        {
            "Front": "<div>line one</div><div>line two</div><script>alert(1)</script>",
            "Back": "<p>para</p><p>graph</p> 5 &lt; 6&nbsp;",
        },
    )
    add("Vocab", spanish, {"Word": "casa", "Meaning": "house", "Example": "una casa grande"})
    add("Vocab", spanish, {"Word": "mesa", "Meaning": "table"})

    basic_card = basic.cards()[0].id
    picture_card = picture.cards()[0].id
    forward, backward = (card.id for card in sorted(reversed_note.cards(), key=lambda c: c.ord))
    cloze_card = min(cloze.cards(), key=lambda card: card.ord).id
    # From new through learning and review to a lapse and relearning: learn rows (0), review
    # rows (1, one of them an Again), and a relearn row (2).
    for rating, at, taken in (
        (CardAnswer.AGAIN, T0_MS, 4_000),
        (CardAnswer.GOOD, T0_MS + MINUTE_MS, 3_000),
        (CardAnswer.GOOD, T0_MS + 11 * MINUTE_MS, 2_500),
        (CardAnswer.GOOD, T0_MS + 4 * DAY_MS, 2_000),
        (CardAnswer.AGAIN, T0_MS + 10 * DAY_MS, 6_000),
        (CardAnswer.GOOD, T0_MS + 10 * DAY_MS + 10 * MINUTE_MS, 1_500),
    ):
        _answer(col, basic_card, rating, at, taken)
    _answer(col, picture_card, CardAnswer.EASY, T0_MS + 2 * MINUTE_MS, 1_000)
    # "Set due date" on a card never studied: Anki logs it as a manual revlog row.
    col.sched.set_due_date([forward], "3")
    col.sched.suspend_cards([backward])

    revlog = [
        tuple(row) for row in col.db.all("SELECT cid, id, ease, time, type FROM revlog ORDER BY id")
    ]

    def export(name: str, legacy: bool) -> bytes:
        path = workdir / name
        col.export_anki_package(
            out_path=str(path),
            options=ExportAnkiPackageOptions(
                with_scheduling=True, with_deck_configs=True, with_media=True, legacy=legacy
            ),
            limit=None,
        )
        return path.read_bytes()

    apkg = export("current.apkg", legacy=False)
    legacy_apkg = export("legacy.apkg", legacy=True)
    # Exporting a whole collection closes it, so it comes last.
    col.export_collection_package(str(workdir / "all.colpkg"), include_media=True, legacy=False)
    return BuiltCollection(
        apkg=apkg,
        legacy_apkg=legacy_apkg,
        colpkg=(workdir / "all.colpkg").read_bytes(),
        revlog=revlog,
        card_ids={
            "basic": basic_card,
            "picture": picture_card,
            "forward": forward,
            "backward": backward,
            "cloze": cloze_card,
        },
    )


def build_genanki_package(workdir: Path) -> bytes:
    import genanki

    workdir.mkdir(parents=True, exist_ok=True)
    picture = workdir / "my cat.jpg"
    picture.write_bytes(JPEG_BYTES)
    deck = genanki.Deck(2059400110, "Genanki Deck")
    deck.add_note(
        genanki.Note(
            model=genanki.BASIC_MODEL,
            fields=["Capital of Italy?", 'Rome <img src="my cat.jpg">'],
            tags=["italy"],
            guid="guid-basic",
        )
    )
    deck.add_note(
        genanki.Note(
            model=genanki.BASIC_AND_REVERSED_CARD_MODEL, fields=["uno", "one"], guid="guid-rev"
        )
    )
    deck.add_note(
        genanki.Note(
            model=genanki.CLOZE_MODEL,
            fields=["{{c1::Rome}} is in {{c2::Italy}}", ""],
            guid="guid-cloze",
        )
    )
    path = workdir / "genanki.apkg"
    genanki.Package(deck, media_files=[str(picture)]).write_to_file(str(path), timestamp=1.7e9)
    return path.read_bytes()


# --- crafted packages ----------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def members(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def replace_members(package: bytes, changes: dict[str, bytes | None]) -> bytes:
    """The same package with members replaced or added (None removes one)."""
    contents = members(package)
    for name, value in changes.items():
        if value is None:
            contents.pop(name, None)
        else:
            contents[name] = value
    return zip_bytes(contents)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def media_entries(names: list[str]) -> bytes:
    """A current-format media map (zstd-compressed MediaEntries), built with Anki's own
    protobuf classes so that the reader's hand-written parsing is checked against them."""
    from anki.import_export_pb2 import MediaEntries

    entries = MediaEntries()
    for name in names:
        entries.entries.add(name=name, size=1, sha1=hashlib.sha1(name.encode()).digest())
    return zstd(entries.SerializeToString())


def media_names(package: bytes) -> list[str]:
    """The names in a current-format package's media map, read with Anki's own classes."""
    from anki.import_export_pb2 import MediaEntries

    raw = members(package)["media"]
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    return [entry.name for entry in MediaEntries.FromString(plain).entries]


def alter_legacy_collection(package: bytes, sql: str) -> bytes:
    """A legacy package whose collection.anki21 had ``sql`` run on it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        path.write_bytes(members(package)["collection.anki21"])
        conn = sqlite3.connect(path)
        conn.executescript(sql)
        conn.close()
        return replace_members(package, {"collection.anki21": path.read_bytes()})


# --- a large package, for timing -----------------------------------------------------------------


def build_large_package(workdir: Path, notes: int, reviews: int) -> bytes:
    """A current-format .apkg of ``notes`` Basic notes and ``reviews`` revlog rows, inserted
    with SQL into a collection the anki library made, then exported by the anki library."""
    from anki.collection import Collection, ExportAnkiPackageOptions

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "large.anki2"
    col = Collection(str(path))
    deck_id = col.decks.id("Big::Deck")
    basic_id = col.models.by_name("Basic")["id"]
    col.close()

    conn = sqlite3.connect(path)
    base = 1_600_000_000_000
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?, ?, 0, -1, ?, ?, ?, 0, 0, '')",
        (
            (
                base + i,
                f"guid{i}",
                basic_id,
                " big " if i % 2 else "",
                f"question <b>{i}</b>\x1fanswer<br>number {i}",
                f"question {i}",
            )
            for i in range(notes)
        ),
    )
    conn.executemany(
        "INSERT INTO cards VALUES (?, ?, ?, 0, 0, -1, 2, 2, 100, 10, 2500, 5, 0, 0, 0, 0, 0, '')",
        ((base + i, base + i, deck_id) for i in range(notes)),
    )
    conn.executemany(
        "INSERT INTO revlog VALUES (?, ?, -1, ?, 1, 1, 2500, 3000, 1)",
        ((base + i * 1000, base + i % max(notes, 1), 1 + i % 4) for i in range(reviews)),
    )
    conn.commit()
    conn.close()

    col = Collection(str(path))
    out = workdir / "large.apkg"
    col.export_anki_package(
        out_path=str(out),
        options=ExportAnkiPackageOptions(
            with_scheduling=True, with_deck_configs=False, with_media=False, legacy=False
        ),
        limit=None,
    )
    col.close()
    return out.read_bytes()
