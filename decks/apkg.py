"""Reader for Anki packages (.apkg decks and .colpkg whole collections).

Pure: no Django, no ORM. ``read_package`` turns the bytes of a package into plain dataclasses
(cards with their text already converted to the app's Markdown, the review log, the media the
cards use); the caller decides what to save. It does not use the ``anki`` package (AGPL, large):
a package is a zip holding an SQLite collection, a media map and numbered media files, which
``zipfile``, ``sqlite3`` and ``zstandard`` read.

Layouts handled, newest first (a package may carry several; the newest present is read):

* ``collection.anki21b``: SQLite (schema 18) compressed with zstd. Current exports also carry a
  one-note ``collection.anki2`` stub ("please update Anki") for old clients, which must not be
  read instead. The media map is a zstd-compressed protobuf and every media file is
  zstd-compressed.
* ``collection.anki21`` / ``collection.anki2``: plain SQLite (schema 11, note types and decks
  as JSON in the ``col`` row), JSON media map ``{"0": "name.jpg"}``, media files stored as is.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import sqlite3
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import nh3
import zstandard

__all__ = [
    "REVLOG_FILTERED",
    "REVLOG_LEARN",
    "REVLOG_MANUAL",
    "REVLOG_RELEARN",
    "REVLOG_RESCHEDULED",
    "REVLOG_REVIEW",
    "ApkgCard",
    "ApkgPackage",
    "ApkgReview",
    "PackageError",
    "is_anki_package",
    "read_package",
]


class PackageError(ValueError):
    """The package is not a readable Anki package; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class ApkgCard:
    anki_card_id: int
    note_guid: str  # Anki's note guid: stable across re-exports, the key for re-imports
    ord: int  # template ordinal; for cloze notes, the cloze number - 1
    deck_name: str  # the card's home deck (not a filtered deck), "Parent::Child"
    # Markdown for the app: images as ![](NAME), or ![](<NAME>) when NAME holds spaces or
    # brackets, with NAME the key in ApkgPackage.media (or the src as written if not a file).
    front: str
    back: str  # the answer side without the question repeated before <hr id=answer>
    tags: str  # space-separated
    suspended: bool  # queue == -1 (buried cards are not suspended)
    # 0..n-1 in Anki's new-card order (the due number of new cards, the remembered original
    # position of studied ones), then note id and ord; cards are listed in this order.
    position: int


@dataclass(frozen=True, slots=True)
class ApkgReview:
    anki_card_id: int
    reviewed_at_ms: int  # revlog.id: epoch milliseconds
    ease: int  # 1 Again .. 4 Easy; 0 in rows that are not answers (manual rescheduling)
    duration_ms: int  # revlog.time
    kind: int  # revlog.type: see the REVLOG_* constants


@dataclass(frozen=True)
class ApkgPackage:
    cards: list[ApkgCard]
    reviews: list[ApkgReview]  # every revlog row of the cards above, oldest first
    media: dict[str, bytes]  # original file name -> bytes, only files the cards show
    deck_names: list[str]  # sorted; the decks holding at least one of the cards


# revlog.type values, for callers deciding which rows are real reviews. Anki writes MANUAL for
# "set due date", "forget"/reset and repositioning (with ease 0), RESCHEDULED when FSRS
# reschedules cards, and FILTERED for answers in a filtered deck that does not reschedule.
REVLOG_LEARN = 0
REVLOG_REVIEW = 1
REVLOG_RELEARN = 2
REVLOG_FILTERED = 3
REVLOG_MANUAL = 4
REVLOG_RESCHEDULED = 5

# Newest first: the first one present is the one read.
_COLLECTION_NAMES = ("collection.anki21b", "collection.anki21", "collection.anki2")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# PackageMetadata.version (the "meta" member): 3 = anki21b with zstd media.
_META_VERSION_LATEST = 3
# Schema 11 is what legacy exports and genanki write; 18 is the current one. Between them the
# tables changed shape, and anything newer is a format this reader has never seen.
_MIN_SCHEMA, _MAX_SCHEMA = 11, 18
# A deflated member expanding more than this, once it is big enough to matter, is a zip bomb
# rather than an Anki file (an exported collection deflates roughly 5-20 to 1).
_MAX_RATIO = 200
_RATIO_CHECK_FROM = 1024 * 1024
_CHUNK = 1024 * 1024


def is_anki_package(data: bytes) -> bool:
    """Whether ``data`` is a zip with an Anki collection inside (content, not file name)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except Exception:  # a probe: any failure to parse means "not a package"
        return False
    return any(name in names for name in _COLLECTION_NAMES)


def read_package(
    data: bytes, *, max_uncompressed: int = 500 * 1024 * 1024, max_files: int = 20000
) -> ApkgPackage:
    """Read an .apkg/.colpkg; raise ``PackageError`` naming the part that is wrong."""
    archive = _open_zip(data)
    with archive:
        infos = _check_members(archive, max_uncompressed, max_files)
        budget = _Budget(max_uncompressed)
        collection = next((name for name in _COLLECTION_NAMES if name in infos), None)
        if collection is None:
            raise PackageError(
                "the zip holds no Anki collection (collection.anki21b, collection.anki21 "
                "or collection.anki2)"
            )
        version = _package_version(archive, infos, collection)
        media_map = _read_media_map(archive, infos, budget)
        with tempfile.TemporaryDirectory(prefix="apkg-") as tmp:
            # sqlite3 cannot open a database held in memory as bytes, so the collection goes
            # through a private temporary file, streamed (and decompressed) chunk by chunk.
            path = Path(tmp) / "collection.sqlite"
            _extract_collection(archive, infos[collection], path, budget)
            cards, reviews, wanted_media = _read_collection(path, collection, set(media_map))
        media = _read_media(archive, infos, media_map, wanted_media, version, budget)
    return ApkgPackage(
        cards=cards,
        reviews=reviews,
        media=media,
        deck_names=sorted({card.deck_name for card in cards}),
    )


# --- zip container ----------------------------------------------------------------------------


class _Budget:
    """Bytes that may still be produced by decompression, across all members read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, count: int, what: str) -> None:
        self.left -= count
        if self.left < 0:
            raise PackageError(
                f"{what} expands beyond the limit of {self.limit} uncompressed bytes (zip bomb?)"
            )


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError(f"the file is not a zip archive, or it is truncated ({exc})") from exc
    except Exception as exc:  # a mangled central directory fails in many different ways
        raise PackageError(f"the zip archive is damaged ({exc})") from exc


def _check_members(
    archive: zipfile.ZipFile, max_uncompressed: int, max_files: int
) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > max_files:
        raise PackageError(f"the zip holds {len(infos)} files, more than the {max_files} allowed")
    total = sum(info.file_size for info in infos)
    if total > max_uncompressed:
        raise PackageError(
            f"the zip would expand to {total} bytes, more than the {max_uncompressed} allowed"
        )
    for info in infos:
        if info.file_size > _RATIO_CHECK_FROM and info.file_size > _MAX_RATIO * max(
            info.compress_size, 1
        ):
            raise PackageError(
                f"zip member {info.filename!r} has a suspicious compression ratio "
                f"({info.file_size} bytes from {info.compress_size}; zip bomb?)"
            )
    return {info.filename: info for info in infos}


def _zip_error(name: str, exc: Exception, what: str = "") -> PackageError:
    label = f"{what} (zip member {name!r})" if what else f"zip member {name!r}"
    return PackageError(f"{label} cannot be read: damaged or truncated ({exc})")


# Errors zipfile raises for a member whose data is damaged or truncated (RuntimeError: an
# encrypted member; NotImplementedError: an unknown compression method). OSError is left out on
# purpose: reading from memory never raises it, so one comes from the temporary file's disk.
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str = "") -> bytes:
    try:
        return archive.read(info)
    except _ZIP_READ_ERRORS as exc:
        raise _zip_error(info.filename, exc, what) from exc


def _zstd_chunks(
    source: io.BufferedIOBase, what: str, budget: _Budget, source_name: str
) -> Iterator[bytes]:
    # Streaming: frames written by Anki don't declare their content size, and streaming lets
    # the budget stop a bomb after one chunk instead of after allocating all of it.
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    while True:
        try:
            chunk = reader.read(_CHUNK)
        except zstandard.ZstdError as exc:
            raise PackageError(f"{what} is not a valid zstd stream ({exc})") from exc
        except _ZIP_READ_ERRORS as exc:
            raise _zip_error(source_name, exc) from exc
        if not chunk:
            return
        budget.take(len(chunk), what)
        yield chunk


def _zstd_bytes(raw: bytes, what: str, budget: _Budget) -> bytes:
    if not raw.startswith(_ZSTD_MAGIC):
        raise PackageError(f"{what} is not a valid zstd stream")
    return b"".join(_zstd_chunks(io.BytesIO(raw), what, budget, what))


def _extract_collection(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, budget: _Budget
) -> None:
    name = info.filename
    try:
        if name.endswith(".anki21b"):
            # Checked apart (reopening a member is cheap) so that a plain SQLite file stored
            # under the new name gets a clear message rather than a zstd error code.
            with archive.open(info) as source:
                if source.read(4) != _ZSTD_MAGIC:
                    raise PackageError(f"{name} is not a valid zstd stream")
            with archive.open(info) as source, path.open("wb") as target:
                for chunk in _zstd_chunks(source, name, budget, name):
                    target.write(chunk)
        else:
            budget.take(info.file_size, name)
            with archive.open(info) as source, path.open("wb") as target:
                while chunk := source.read(_CHUNK):
                    target.write(chunk)
    except _ZIP_READ_ERRORS as exc:
        raise _zip_error(name, exc) from exc


def _package_version(
    archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], collection: str
) -> int:
    """PackageMetadata.version from "meta"; older packages have no meta member."""
    if "meta" in infos:
        raw = _read_member(archive, infos["meta"])
        for field, value in _protobuf_fields(raw, "meta"):
            if field == 1 and isinstance(value, int):
                return value
    return {"collection.anki21b": 3, "collection.anki21": 2}.get(collection, 1)


# --- media --------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_media_name(name: str) -> str:
    # Media names become file names in the app's storage, so anything that could step out of a
    # directory (or truncate a C string) is refused outright, however the caller stores them.
    if (
        not name
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name in (".", "..")
        or _DRIVE.match(name)
    ):
        raise PackageError(f"media file name {name!r} is not allowed")
    return name


def _read_media_map(
    archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], budget: _Budget
) -> dict[str, str]:
    """Media name -> zip member name."""
    if "media" not in infos:
        return {}
    raw = _read_member(archive, infos["media"])
    result: dict[str, str] = {}
    if raw.startswith(_ZSTD_MAGIC):
        # MediaEntries { repeated MediaEntry entries = 1; }
        # MediaEntry { string name = 1; uint32 size = 2; bytes sha1 = 3;
        #              optional uint32 legacy_zip_filename = 255; }
        # The zip member of entry i is "i" unless legacy_zip_filename says otherwise.
        plain = _zstd_bytes(raw, "the media map", budget)
        index = 0
        for field, entry in _protobuf_fields(plain, "the media map"):
            if field != 1 or not isinstance(entry, bytes):
                continue
            name, member = None, str(index)
            for sub, value in _protobuf_fields(entry, "the media map"):
                if sub == 1 and isinstance(value, bytes):
                    name = _utf8(value, "the media map")
                elif sub == 255 and isinstance(value, int):
                    member = str(value)
            if name is None:
                raise PackageError(f"the media map entry {index} has no file name")
            result[_check_media_name(name)] = member
            index += 1
        return result
    try:
        legacy = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError(f"the media map is neither JSON nor zstd protobuf ({exc})") from exc
    if not isinstance(legacy, dict):
        raise PackageError("the media map is not a JSON object")
    for member, name in legacy.items():
        if not isinstance(name, str):
            raise PackageError(f"the media map entry {member!r} is not a file name")
        result[_check_media_name(name)] = str(member)
    return result


def _read_media(
    archive: zipfile.ZipFile,
    infos: dict[str, zipfile.ZipInfo],
    media_map: dict[str, str],
    wanted: set[str],
    version: int,
    budget: _Budget,
) -> dict[str, bytes]:
    media: dict[str, bytes] = {}
    for name in sorted(wanted):
        info = infos.get(media_map[name])
        if info is None:
            # Anki exports skip files missing from the collection's media folder, so a
            # reference without a file is ordinary: the card keeps a dangling reference.
            continue
        raw = _read_member(archive, info, f"media file {name!r}")
        if version >= _META_VERSION_LATEST:
            media[name] = _zstd_bytes(raw, f"media file {name!r}", budget)
        else:
            budget.take(len(raw), f"media file {name!r}")
            media[name] = raw
    return media


# --- protobuf (just enough to read Anki's config blobs and media map) ---------------------------


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise PackageError(f"{what} is not valid protobuf")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _protobuf_fields(buf: bytes, what: str) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value): ints for varints, bytes for everything else."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, what)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, what)
            yield field, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, what)
        elif wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        else:
            raise PackageError(f"{what} is not valid protobuf (wire type {wire})")
        if pos + size > end:
            raise PackageError(f"{what} is not valid protobuf (truncated)")
        yield field, buf[pos : pos + size]
        pos += size


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{what} holds text that is not UTF-8") from exc


# --- the collection -----------------------------------------------------------------------------


@dataclass
class _Notetype:
    name: str
    is_cloze: bool
    fields: list[str]
    # ord -> (template name, question template, answer template)
    templates: dict[int, tuple[str, str, str]]


def _unicase(left: str, right: str) -> int:
    a, b = left.casefold(), right.casefold()
    return (a > b) - (a < b)


def _read_collection(
    path: Path, collection: str, media_names: set[str]
) -> tuple[list[ApkgCard], list[ApkgReview], set[str]]:
    # immutable=1: read-only without the -wal/-shm files a WAL-mode database would otherwise
    # want to create (current exports are in WAL mode).
    uri = path.as_uri() + "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise PackageError(f"{collection} cannot be opened as SQLite ({exc})") from exc
    try:
        # Anki declares its name columns with its own collation; without it SQLite refuses any
        # statement that touches their indexes.
        conn.create_collation("unicase", _unicase)
        # A crafted database could hide work in views or triggers: only plain tables are read.
        conn.execute("PRAGMA trusted_schema = OFF")
        return _read_tables(conn, collection, media_names)
    except sqlite3.DatabaseError as exc:
        raise PackageError(f"{collection} is not a valid Anki collection ({exc})") from exc
    except PackageError:
        raise
    except (TypeError, AttributeError, ValueError) as exc:
        # SQLite columns hold whatever type was written: a crafted collection can put a number
        # where Anki keeps text, which only shows up as one of these on use.
        raise PackageError(f"{collection} holds data Anki would not write ({exc!r})") from exc
    finally:
        conn.close()


def _read_tables(
    conn: sqlite3.Connection, collection: str, media_names: set[str]
) -> tuple[list[ApkgCard], list[ApkgReview], set[str]]:
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = {"col", "notes", "cards", "revlog"} - tables
    if missing:
        raise PackageError(f"{collection} lacks the tables {', '.join(sorted(missing))}")
    row = conn.execute("SELECT ver FROM col").fetchone()
    if row is None or not isinstance(row[0], int):
        raise PackageError(f"{collection} has no schema version")
    schema = row[0]
    if not _MIN_SCHEMA <= schema <= _MAX_SCHEMA:
        raise PackageError(
            f"{collection} uses collection schema {schema}, which is not supported "
            f"(versions {_MIN_SCHEMA} to {_MAX_SCHEMA} are)"
        )
    if "notetypes" in tables:
        new_missing = {"notetypes", "fields", "templates", "decks"} - tables
        if new_missing:
            raise PackageError(f"{collection} lacks the tables {', '.join(sorted(new_missing))}")
        notetypes = _notetypes_from_tables(conn, collection)
        decks = {
            did: name.replace("\x1f", "::")
            for did, name in conn.execute("SELECT id, name FROM decks")
        }
    else:
        notetypes, decks = _notetypes_and_decks_from_json(conn, collection)

    renderer = _Renderer(media_names)
    notes = {
        nid: (guid, mid, tags, flds)
        for nid, guid, mid, tags, flds in conn.execute(
            "SELECT id, guid, mid, tags, flds FROM notes"
        )
    }
    staged: list[tuple[tuple[float, int, int], tuple]] = []
    note_cache: tuple[int, dict[str, str]] | None = None
    for cid, nid, did, odid, ord_, ctype, queue, due, odue, cdata in conn.execute(
        "SELECT id, nid, did, odid, ord, type, queue, due, odue, data FROM cards "
        "ORDER BY nid, ord, id"
    ):
        note = notes.get(nid)
        notetype = notetypes.get(note[1]) if note else None
        if note is None or notetype is None:
            continue  # an orphan card: Anki's "check database" would delete it
        guid, _mid, raw_tags, flds = note
        if note_cache is None or note_cache[0] != nid:
            values = flds.split("\x1f")
            fields = dict(zip(notetype.fields, values, strict=False))
            for name in notetype.fields[len(values) :]:
                fields[name] = ""
            note_cache = (nid, fields)
        template = notetype.templates.get(0 if notetype.is_cloze else ord_)
        if template is None:
            continue  # a card whose template was deleted cannot be rendered
        tags = " ".join(str(raw_tags).split())
        deck_name = decks.get(odid or did) or decks.get(1) or "Default"
        front, back = renderer.render_card(
            notetype, template, note_cache[1], ord_, tags=tags, deck_name=deck_name
        )
        # Anki's own new-card order: the due number of a new card (kept in odue while it sits
        # in a filtered deck), or the position remembered in card data once it was studied.
        new_position: float = float("inf")
        if ctype == 0:
            new_position = odue if odid else due
        elif cdata and '"pos"' in cdata:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                new_position = int(json.loads(cdata)["pos"])
        staged.append(
            (
                (new_position, nid, ord_),
                (cid, str(guid), ord_, deck_name, front, back, tags, queue == -1),
            )
        )
    staged.sort(key=lambda item: item[0])
    cards = [ApkgCard(*fields, position) for position, (_key, fields) in enumerate(staged)]

    # A colpkg keeps the history of deleted cards, and orphan cards were skipped above: only
    # rows for the cards returned are wanted. Filtering in Python is cheaper than an IN
    # subquery here (a set lookup per row against SQLite probing a temporary index).
    kept = {card.anki_card_id for card in cards}
    reviews = [
        ApkgReview(*row)
        for row in conn.execute("SELECT cid, id, ease, time, type FROM revlog ORDER BY id")
        if row[0] in kept
    ]
    return cards, reviews, renderer.used_media


def _notetypes_from_tables(conn: sqlite3.Connection, collection: str) -> dict[int, _Notetype]:
    notetypes: dict[int, _Notetype] = {}
    for ntid, name, config in conn.execute("SELECT id, name, config FROM notetypes"):
        # NotetypeConfig.kind (field 1): 0 normal, 1 cloze.
        kind = 0
        for field, value in _protobuf_fields(bytes(config or b""), f"note type {name!r}"):
            if field == 1 and isinstance(value, int):
                kind = value
        notetypes[ntid] = _Notetype(name=name, is_cloze=kind == 1, fields=[], templates={})
    for ntid, _ord, name in conn.execute("SELECT ntid, ord, name FROM fields ORDER BY ntid, ord"):
        if ntid in notetypes:
            notetypes[ntid].fields.append(name)
    for ntid, ord_, name, config in conn.execute(
        "SELECT ntid, ord, name, config FROM templates ORDER BY ntid, ord"
    ):
        if ntid not in notetypes:
            continue
        # CardTemplateConfig: q_format = 1, a_format = 2.
        qfmt = afmt = ""
        what = f"card template {name!r} of {collection}"
        for field, value in _protobuf_fields(bytes(config or b""), what):
            if field == 1 and isinstance(value, bytes):
                qfmt = _utf8(value, what)
            elif field == 2 and isinstance(value, bytes):
                afmt = _utf8(value, what)
        notetypes[ntid].templates[ord_] = (name, qfmt, afmt)
    return notetypes


def _notetypes_and_decks_from_json(
    conn: sqlite3.Connection, collection: str
) -> tuple[dict[int, _Notetype], dict[int, str]]:
    row = conn.execute("SELECT models, decks FROM col").fetchone()
    try:
        models = json.loads(row[0])
        deck_json = json.loads(row[1])
        notetypes = {}
        for mid, model in models.items():
            notetypes[int(mid)] = _Notetype(
                name=str(model["name"]),
                is_cloze=model.get("type") == 1,
                fields=[str(f["name"]) for f in sorted(model["flds"], key=lambda f: f["ord"])],
                templates={
                    int(t["ord"]): (str(t["name"]), str(t["qfmt"]), str(t["afmt"]))
                    for t in model["tmpls"]
                },
            )
        decks = {int(did): str(deck["name"]) for did, deck in deck_json.items()}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise PackageError(
            f"the note types or decks in {collection} are not valid JSON ({exc!r})"
        ) from exc
    return notetypes, decks


# --- rendering: Anki templates -> HTML -> the app's Markdown ------------------------------------

_TEMPLATE_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
_HR_ANSWER = re.compile(r"<hr\s+id\s*=\s*[\"']?answer[\"']?\s*/?>", re.I)
_MEDIA_TAGS = re.compile(r"\[sound:[^\]]*\]|\[anki:tts[^\]]*\].*?\[/anki:tts\]", re.S)
# What counts as an empty field for {{#Field}}: Anki ignores whitespace and bare <br>/<div>.
_EMPTY_FIELD = re.compile(r"^(?:\s|</?(?:br|div)\s*/?>)*$", re.I)
_ANY_TAG = re.compile(r"<[^>]*>")
_CLOZE_TOKEN = re.compile(r"\{\{c(\d+(?:,\d+)*)::|\}\}")
# Template sections and clozes nested deeper than this are not nested any further.
_MAX_NESTING = 50

# Template nodes: a str is literal text; ("field", name, filters) and
# ("section", name, negated, children) are tags.
_Node = str | tuple


def _parse_template(source: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[str | None, list[_Node]]] = [(None, root)]
    pos = 0
    for match in _TEMPLATE_TAG.finditer(source):
        if match.start() > pos:
            stack[-1][1].append(source[pos : match.start()])
        pos = match.end()
        tag = match.group(1).strip()
        if tag[:1] in ("#", "^"):
            if len(stack) > _MAX_NESTING:
                continue  # rendering recurses per level; no real template nests this deep
            children: list[_Node] = []
            name = tag[1:].strip()
            stack[-1][1].append(("section", name, tag[0] == "^", children))
            stack.append((name, children))
        elif tag[:1] == "/":
            name = tag[1:].strip()
            # Anki refuses a mismatched close; being lenient, close up to the matching open.
            if any(open_name == name for open_name, _ in stack[1:]):
                while stack[-1][0] != name:
                    stack.pop()
                stack.pop()
        elif tag:
            *filters, name = tag.split(":")
            stack[-1][1].append(("field", name.strip(), [f.strip() for f in filters]))
    if pos < len(source):
        stack[-1][1].append(source[pos:])
    return root


@dataclass
class _Cloze:
    ords: frozenset[int]
    opener: str
    children: list
    hint: str = ""


def _parse_clozes(text: str) -> list:
    root: list = []
    stack: list[tuple[_Cloze | None, list]] = [(None, root)]
    pos = 0
    for match in _CLOZE_TOKEN.finditer(text):
        if match.start() > pos:
            stack[-1][1].append(text[pos : match.start()])
        pos = match.end()
        if match.group(1) and len(stack) > _MAX_NESTING:
            # Rendering recurses per level: an opener this deep stays literal text.
            stack[-1][1].append(match.group(0))
        elif match.group(1):
            ords = frozenset(int(n) for n in match.group(1).split(","))
            node = _Cloze(ords, match.group(0), [])
            stack[-1][1].append(node)
            stack.append((node, node.children))
        elif len(stack) > 1:
            node, children = stack.pop()
            assert node is not None
            if children and isinstance(children[-1], str) and "::" in children[-1]:
                children[-1], node.hint = children[-1].split("::", 1)
        else:
            stack[-1][1].append("}}")
    if pos < len(text):
        stack[-1][1].append(text[pos:])
    # An opener never closed is plain text, as in Anki.
    while len(stack) > 1:
        node, children = stack.pop()
        parent = stack[-1][1]
        parent.pop()
        parent.append(node.opener)
        parent.extend(children)
    return root


def _render_clozes(nodes: list, number: int, question: bool) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif number in node.ords:
            if question:
                out.append(f"[{node.hint}]" if node.hint else "[...]")
            else:
                # Anki highlights the revealed deletion; bold is the Markdown equivalent.
                out.append("<b>" + _render_clozes(node.children, number, question) + "</b>")
        else:
            out.append(_render_clozes(node.children, number, question))
    return "".join(out)


def _cloze_only(nodes: list, number: int) -> list[str]:
    found: list[str] = []
    for node in nodes:
        if isinstance(node, _Cloze):
            if number in node.ords:
                found.append(_render_clozes(node.children, number, question=False))
            else:
                found.extend(_cloze_only(node.children, number))
    return found


@dataclass
class _Context:
    fields: dict[str, str]
    specials: dict[str, str]
    number: int  # the cloze number this card asks about: ord + 1
    question: bool
    front_side: str


class _Renderer:
    def __init__(self, media_names: set[str]) -> None:
        self.media_names = media_names
        self.used_media: set[str] = set()
        self._compiled: dict[str, list[_Node]] = {}
        self._cloze_cache: dict[str, list] = {}

    def _compile(self, source: str) -> list[_Node]:
        nodes = self._compiled.get(source)
        if nodes is None:
            nodes = self._compiled[source] = _parse_template(source)
        return nodes

    def render_card(
        self,
        notetype: _Notetype,
        template: tuple[str, str, str],
        fields: dict[str, str],
        ord_: int,
        *,
        tags: str,
        deck_name: str,
    ) -> tuple[str, str]:
        template_name, qfmt, afmt = template
        specials = {
            "Tags": tags,
            "Type": notetype.name,
            "Deck": deck_name,
            "Subdeck": deck_name.rsplit("::", 1)[-1],
            "Card": template_name,
            "CardFlag": "",
        }
        # The cloze cache only needs the current note's texts (its cards come one after the
        # other); clearing it now and then keeps memory flat over a large collection.
        if len(self._cloze_cache) > 64:
            self._cloze_cache.clear()
        context = _Context(fields, specials, ord_ + 1, question=True, front_side="")
        question = self._render(self._compile(qfmt), context)
        context.question = False
        if _HR_ANSWER.search(afmt):
            context.front_side = question
            answer = self._render(self._compile(afmt), context)
            answer = _HR_ANSWER.split(answer, maxsplit=1)[-1]
        else:
            # No answer marker: the app shows the back under the front already, so the back is
            # the answer template without the front repeated in it.
            answer = self._render(self._compile(afmt), context)
        return self.to_text(question), self.to_text(answer)

    def _render(self, nodes: list[_Node], context: _Context) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif node[0] == "field":
                out.append(self._field(node[1], node[2], context))
            else:
                _kind, name, negated, children = node
                value = context.fields.get(name, context.specials.get(name, ""))
                if bool(_EMPTY_FIELD.match(value)) == negated:
                    out.append(self._render(children, context))
        return "".join(out)

    def _field(self, name: str, filters: list[str], context: _Context) -> str:
        fields = context.fields
        if name == "FrontSide" and not filters:
            return context.front_side
        if name in fields:
            value = fields[name]
        elif name in context.specials:
            value = context.specials[name]
        else:
            # Anki matches field names exactly; an old template may differ in case only.
            lowered = name.casefold()
            value = next((v for k, v in fields.items() if k.casefold() == lowered), "")
        # Filters apply right to left: {{text:cloze:Text}} is cloze, then text.
        for filter_name in reversed(filters):
            if filter_name.startswith(("type", "tts")):
                return ""  # typing boxes and text-to-speech have no place in the app's text
            if filter_name == "cloze":
                value = _render_clozes(self._clozes(value), context.number, context.question)
            elif filter_name == "cloze-only":
                value = ", ".join(_cloze_only(self._clozes(value), context.number))
            elif filter_name == "text":
                value = _ANY_TAG.sub("", value)
            # Other filters (hint, furigana, kana, kanji, add-ons') keep the text as it is.
        return value

    def _clozes(self, text: str) -> list:
        parsed = self._cloze_cache.get(text)
        if parsed is None:
            parsed = self._cloze_cache[text] = _parse_clozes(text)
        return parsed

    def to_text(self, fragment: str) -> str:
        return _html_to_text(fragment, self._media_name)

    def _media_name(self, src: str) -> str | None:
        name = src
        if name not in self.media_names:
            # Anki writes names raw in src, but fields pasted from elsewhere may be URL-encoded.
            decoded = unquote(src)
            if decoded in self.media_names:
                name = decoded
        if "<" in name or ">" in name or "\n" in name:
            return None  # no Markdown link destination can hold these
        if name in self.media_names:
            self.used_media.add(name)
        return name


# Tags kept by nh3 so their meaning can be turned into Markdown; everything else is stripped
# (keeping its text), and script/style lose their contents too.
_BLOCK_TAGS = frozenset(
    {"div", "p", "ul", "ol", "li", "table", "tr", "blockquote", "pre", "hr"}
    | {f"h{n}" for n in range(1, 7)}
)
_EMPHASIS = {"b": "**", "strong": "**", "i": "*", "em": "*"} | {f"h{n}": "**" for n in range(1, 7)}
_KEPT_TAGS = _BLOCK_TAGS | set(_EMPHASIS) | {"br", "img", "td", "th"}
# nh3 re-serialises well-formed HTML: attributes always name="value", text with < escaped.
_HTML_TAG = re.compile(r'<(/?)([a-zA-Z0-9]+)((?:\s+[^\s/>="]+(?:="[^"]*")?)*)\s*/?>')
_SRC = re.compile(r'\ssrc="([^"]*)"')
_WHITESPACE = re.compile(r"[ \t\r\n\f]+")
# \x01 marks a block boundary below, so control characters in the text itself go first.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
_BOUNDARY_RUN = re.compile(r"\x01[\x01 ]*")
_BREAK_THEN_BOUNDARY = re.compile(r"\n *\x01")
_AROUND_NEWLINE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_NON_BOUNDARY = re.compile(r"[^\n\x01]+")
_NEEDS_ANGLE = re.compile(r"[\s()\[\]]")
_CLEANER_OPTIONS = {
    "tags": set(_KEPT_TAGS),
    "attributes": {"img": {"src"}},
    # Buttons are card-template UI (Image Occlusion's "Toggle Masks"), not card content.
    "clean_content_tags": {"script", "style", "button"},
    "link_rel": None,
}
# nh3.Cleaner (nh3 >= 0.3) converts the options once instead of on every call: four times
# faster, which matters for a collection of 100,000 notes.
if hasattr(nh3, "Cleaner"):
    _sanitize = nh3.Cleaner(**_CLEANER_OPTIONS).clean
else:  # pragma: no cover - older nh3

    def _sanitize(fragment: str) -> str:
        return nh3.clean(fragment, **_CLEANER_OPTIONS)


# HTML parsing (html5ever, inside nh3) does work proportional to the depth of open elements for
# many tags it meets (<div>, <rt>, ...), so a field of 100,000 nested tags takes minutes. Real
# cards nest a handful of levels; markup that may nest deeper than this (counting every
# non-void tag left open, an upper bound) becomes plain text without going through nh3.
_MAX_DEPTH = 100
_DEPTH_CHECK_FROM = 3 * _MAX_DEPTH  # "<b>" is 3 characters: shorter text cannot nest deeper
# Some shapes are slow without nesting (text inside thousands of sibling <table>s is moved one
# by one), so huge fragments, far beyond any hand-made card, skip nh3 as well.
_MAX_RICH_CHARS = 100_000
_OPEN_CLOSE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_VOID_TAGS = frozenset(
    {"br", "img", "hr", "wbr", "input", "meta", "link", "area", "base", "col", "embed"}
    | {"param", "source", "track"}
)
_INVISIBLE = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_LINE_BREAK_TAG = re.compile(r"<br\b[^>]*>|</?(?:div|p|li|tr|h[1-6])\b[^>]*>", re.I)


def _too_deep(fragment: str) -> bool:
    depth = 0
    for match in _OPEN_CLOSE.finditer(fragment):
        if match.group(1):
            depth = max(depth - 1, 0)
        elif match.group(2).lower() not in _VOID_TAGS:
            depth += 1
            if depth > _MAX_DEPTH:
                return True
    return False


def _plain_text(fragment: str) -> str:
    """The text of pathological markup, without parsing it as HTML (see _MAX_DEPTH)."""
    text = _LINE_BREAK_TAG.sub("\n", _INVISIBLE.sub("", fragment))
    text = html.unescape(_ANY_TAG.sub("", _CONTROL.sub("", text))).replace("\xa0", " ")
    lines = (_WHITESPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _wrap_emphasis(content: str, marker: str) -> str:
    # Emphasis cannot span lines or start with a space in Markdown, so wrap each line's text
    # and leave its surrounding spaces outside the markers.
    def wrap(match: re.Match[str]) -> str:
        text = match.group(0)
        core = text.strip(" ")
        if not core:
            return text
        lead = text[: len(text) - len(text.lstrip(" "))]
        trail = text[len(text.rstrip(" ")) :]
        return f"{lead}{marker}{core}{marker}{trail}"

    return _NON_BOUNDARY.sub(wrap, content)


def _html_to_text(fragment: str, media_name: Callable[[str], str | None]) -> str:
    """Anki card HTML -> the app's Markdown text."""
    if "[" in fragment:
        fragment = _MEDIA_TAGS.sub("", fragment)
    if "<" not in fragment and "&" not in fragment:
        # Most fields are plain text: HTML whitespace rules, nothing more.
        return _WHITESPACE.sub(" ", _CONTROL.sub("", fragment)).strip()
    if len(fragment) > _DEPTH_CHECK_FROM and (
        len(fragment) > _MAX_RICH_CHARS or _too_deep(fragment)
    ):
        return _plain_text(fragment)
    # After nh3 the markup is well formed, so a regex walk over its tags is exact; html.unescape
    # below never yields control characters, so removing them once here is enough.
    clean = _CONTROL.sub("", _sanitize(fragment))
    parts: list[str] = []
    emphasis: list[tuple[str, int | None]] = []
    active: set[str] = set()
    lists: list[str] = []
    pos = 0

    def text(segment: str) -> None:
        segment = _WHITESPACE.sub(" ", segment)
        if "&" in segment:
            segment = html.unescape(segment).replace("\xa0", " ")
        parts.append(segment)

    for match in _HTML_TAG.finditer(clean):
        if match.start() > pos:
            text(clean[pos : match.start()])
        pos = match.end()
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if tag in _BLOCK_TAGS:
            parts.append("\x01")
            if tag in ("ul", "ol"):
                if closing:
                    if lists:
                        lists.pop()
                else:
                    lists.append(tag)
            elif tag == "li" and not closing:
                parts.append("1. " if lists and lists[-1] == "ol" else "- ")
            elif tag == "p" and closing:
                parts.append("\n")  # a paragraph ends with a blank line
        if tag in _EMPHASIS:
            marker = _EMPHASIS[tag]
            if not closing:
                # Only the outermost tag of each kind adds markers: <b><b>x</b></b> is bold
                # once, and a field nesting thousands of them stays linear to convert.
                start = None if marker in active else len(parts)
                if start is not None:
                    active.add(marker)
                emphasis.append((tag, start))
            elif emphasis and emphasis[-1][0] == tag:
                _tag, start = emphasis.pop()
                if start is not None:
                    active.discard(marker)
                    inner = "".join(parts[start:])
                    del parts[start:]
                    parts.append(_wrap_emphasis(inner, marker))
        elif tag == "br":
            parts.append("\n")
        elif tag in ("td", "th") and closing:
            parts.append(" ")
        elif tag == "img" and not closing:
            src = _SRC.search(match.group(3))
            if src:
                name = media_name(html.unescape(src.group(1)))
                if name is not None:
                    # Markdown needs <...> around a destination with spaces or brackets.
                    dest = f"<{name}>" if _NEEDS_ANGLE.search(name) else name
                    parts.append(f"![]({dest})")
    if pos < len(clean):
        text(clean[pos:])
    result = "".join(parts)
    if "\x01" in result or "\n" in result:
        # A block boundary is one line break, absorbed by a <br> right before it.
        result = _BOUNDARY_RUN.sub("\x01", result)
        result = _BREAK_THEN_BOUNDARY.sub("\n", result).replace("\x01", "\n")
        result = _AROUND_NEWLINE.sub("\n", result)
        result = _MANY_NEWLINES.sub("\n\n", result)
    return result.strip()
