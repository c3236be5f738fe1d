from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Import and export of flashcard decks: the plain-text "seed" format used by the demo seeds,
# CSV and TSV files, Anki's "Notes in Plain Text" export and Quizlet's export.
#
# The seed format, as produced by a common flashcard website's "copy" feature::
#
#     week 2 - CNN's Flashcards
#
#     1
#     Q
#
#     what is a CNN convolutional layer
#
#     A
#
#     This layer applies convolutional filters ...
#
#     How well did you know this?
#     1
#     Not at all
#     2
#     3
#     4
#     5
#     Perfectly
#     2
#     Q
#     ...
#
# CSV and TSV: one card per record, ``front,back[,tags]``, with an optional header row naming
# the columns (see ``_HEADER_ROLES``) and CSV quoting, so fields may hold the separator, quotes
# and newlines.
#
# Anki "Notes in Plain Text": ``#key:value`` header lines (``#separator:tab``, ``#html:true``,
# ``#tags column:3``, ...), then one note per record, quoted with CSV rules.
#
# Quizlet: ``term<TAB>definition``, one card per line, with no quoting at all.
#
# This module is deliberately free of Django imports so that it can be tested and reused without
# settings or a database; callers turn a ``ParsedDeck`` into model instances. The limits below
# are defaults: callers pass their own (from settings) to ``decode_upload`` and the parsers.

MAX_IMPORT_BYTES = 10 * 1024 * 1024
MAX_CARDS = 200_000
MAX_FIELD_CHARS = 20_000
# Matches Deck.title's max_length, so an over-long title fails here with a line number instead
# of in the database.
MAX_TITLE_CHARS = 200
# Matches Card.tags's max_length, for the same reason.
MAX_TAGS_CHARS = 500
# The title of a deck read from a format that has no title of its own, when the caller gives none.
DEFAULT_TITLE = "Imported deck"
FORMATS = ("seed", "csv", "tsv", "anki", "quizlet")

QUESTION_MARKER = "Q"
ANSWER_MARKER = "A"
SCALE_HEADER = "How well did you know this?"
SCALE_LINES = ("1", "Not at all", "2", "3", "4", "5", "Perfectly")

_UTF8_BOM = b"\xef\xbb\xbf"
# UTF-32 comes first because the UTF-32-LE mark begins with the UTF-16-LE one.
_FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
# Tab and the newline characters are the only C0 controls a text file legitimately contains;
# CR is allowed in bytes because it is turned into a newline afterwards.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Includes the C1 range, which is valid UTF-8 but never appears in real text.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_PREVIEW_CHARS = 40

# Header-row cell names (compared case-insensitively) and the column each one names.
_HEADER_ROLES = {
    "front": "front",
    "question": "front",
    "term": "front",
    "word": "front",
    "prompt": "front",
    "back": "back",
    "answer": "back",
    "definition": "back",
    "meaning": "back",
    "tags": "tags",
    "tag": "tags",
}
_SEPARATOR_NAMES = {",": "comma", "\t": "tab"}

# Anki's names for its separators, compared case-insensitively as Anki does.
_ANKI_SEPARATORS = {
    "tab": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": " ",
    "colon": ":",
}
_ANKI_COLUMN_KEYS = ("tags column", "deck column", "notetype column", "guid column")
# Every header key Anki writes or reads; a first line starting with one of these marks the file
# as an Anki export. Keys not used below are accepted and ignored, as Anki ignores unknown ones.
_ANKI_KEYS = frozenset(
    {"separator", "html", "columns", "tags", "deck", "notetype", "if matches", "match scope"}
    | set(_ANKI_COLUMN_KEYS)
)

_HTML_BR = re.compile(r"<br(?:\s[^>]*)?/?>", re.IGNORECASE)
_HTML_BLOCK_BOUNDARY = re.compile(r"</(?:div|p)\s*>\s*<(?:div|p)(?:\s[^>]*)?>", re.IGNORECASE)
_HTML_BLOCK_TAG = re.compile(r"</?(?:div|p)(?:\s[^>]*)?>", re.IGNORECASE)
# Only things that look like tags: a lone "<" in "a < b" is text (Anki escapes it anyway).
_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^>]*>", re.DOTALL)
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TAG_SEPARATORS = re.compile(r"[\s,]+")


class DeckFormatError(ValueError):
    """A problem with an uploaded deck, phrased for the person who uploaded it."""

    def __init__(self, line: int | None, message: str) -> None:
        # Both values go to args so that the exception survives pickling unchanged.
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"Line {self.line}: {self.message}"


@dataclass(frozen=True)
class ParsedCard:
    front: str
    back: str
    line: int
    number: int
    # Space-separated, like Card.tags; last and defaulted so that positional constructors from
    # before tags existed keep working.
    tags: str = ""


@dataclass(frozen=True)
class SkippedCard:
    number: int
    line: int
    reason: str


@dataclass(frozen=True)
class ParsedDeck:
    title: str
    cards: list[ParsedCard]
    skipped: list[SkippedCard]


def check_size(size: int, *, max_bytes: int = MAX_IMPORT_BYTES) -> None:
    """Refuse a file of ``size`` bytes over the limit (callers check uploads before reading)."""
    if size > max_bytes:
        size_text, limit = _describe_sizes(size, max_bytes)
        raise DeckFormatError(None, f"The file is {size_text}; the limit is {limit}")


def decode_upload(data: bytes, *, max_bytes: int = MAX_IMPORT_BYTES) -> str:
    """Decode an uploaded file as UTF-8 text with ``\\n`` newlines, or explain why it is not."""
    if not data or data == _UTF8_BOM:
        raise DeckFormatError(None, "The file is empty")
    check_size(len(data), max_bytes=max_bytes)
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise DeckFormatError(
                1,
                f"the file is {encoding} text, not UTF-8; save it as UTF-8 and upload it again",
            )
    data = data.removeprefix(_UTF8_BOM)

    # Binary checks come before decoding: a binary file is usually invalid UTF-8 as well, and
    # "not UTF-8" would send the user looking for the wrong fix.
    match = _CONTROL_BYTES.search(data)
    if match:
        line = _byte_line(data, match.start())
        if _looks_like_utf16(data):
            raise DeckFormatError(
                line,
                "the file looks like UTF-16 text (without a byte-order mark), not UTF-8; "
                "save it as UTF-8 and upload it again",
            )
        raise DeckFormatError(
            line,
            f"the file contains binary data (byte 0x{data[match.start()]:02X}), not text",
        )

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeckFormatError(
            _byte_line(data, exc.start),
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02X} cannot be decoded; "
            "it may be Latin-1 or Windows-1252); save it as UTF-8 and upload it again",
        ) from None

    text = _normalise_newlines(text)
    _check_control_chars(text)
    return text


def detect_format(text: str) -> str:
    """Tell which of ``FORMATS`` the text is in, or raise ``DeckFormatError``.

    - "seed": a title line, then (after blank lines) a line ``1`` and a line ``Q``.
    - "anki": the first line is an Anki header such as ``#separator:tab`` or ``#html:true``.
    - "tsv": the first non-blank line has a tab outside double quotes. A Quizlet export (one tab
      per line, no quoting) reads the same as a header-less TSV file, so it is reported as "tsv"
      too, except when it has a field starting with a double quote that is not a complete
      CSV-quoted field (``"Carpe diem" means...``): Quizlet writes quotes literally, where TSV
      would read them as quoting, so that file is "quizlet".
    - "csv": the first non-blank line has a comma outside double quotes (and no such tab).
    """
    lines = _prepare(text, check=False).split("\n")
    content = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not content:
        raise DeckFormatError(1, "the file is empty")
    if _looks_like_seed(lines):
        return "seed"
    if _is_anki_header(lines[0]):
        return "anki"
    first_number, first = content[0]
    tabs, commas = _count_unquoted_separators(first)
    if tabs:
        return "quizlet" if _looks_like_quizlet([line for _, line in content]) else "tsv"
    if commas:
        return "csv"
    raise DeckFormatError(
        first_number,
        "could not tell the file's format; expected CSV (front,back[,tags] on each line), "
        'tab-separated text, an Anki "Notes in Plain Text" export, or the flashcard text '
        "format (a title line, a blank line, then 1, Q, the question, A, the answer, ...)",
    )


def parse_deck(
    text: str,
    *,
    format: str | None = None,
    title: str | None = None,
    max_cards: int = MAX_CARDS,
) -> ParsedDeck:
    """Parse a deck in ``format`` (one of ``FORMATS``; detected when None).

    ``title`` names decks from formats without a title of its own (all but "seed", whose title
    line wins); blank or None means ``DEFAULT_TITLE``.
    """
    if format is None:
        format = detect_format(text)
    if format == "seed":
        return parse_seed_text(text, max_cards=max_cards)
    parser = _PARSERS.get(format)
    if parser is None:
        raise DeckFormatError(
            None, f"Unknown deck format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    return parser(text, title=title, max_cards=max_cards)


def parse_seed_text(text: str, *, max_cards: int = MAX_CARDS) -> ParsedDeck:
    """Parse the seed format, raising ``DeckFormatError`` with a 1-based line for any problem."""
    # The size limit is decode_upload's job, so that there is one limit, set by the caller.
    lines = [line.rstrip() for line in _prepare(text).split("\n")]
    # Trailing blank lines carry no meaning; dropping them lets "end of file" mean "end of
    # content" everywhere below, including for a truncated final rating scale.
    while lines and not lines[-1]:
        lines.pop()
    return _SeedParser(lines, max_cards).parse()


def parse_csv_text(
    text: str, *, title: str | None = None, max_cards: int = MAX_CARDS
) -> ParsedDeck:
    """Parse comma-separated ``front,back[,tags]`` records, with an optional header row."""
    return _parse_table(text, ",", title=title, max_cards=max_cards)


def parse_tsv_text(
    text: str, *, title: str | None = None, max_cards: int = MAX_CARDS
) -> ParsedDeck:
    """Parse tab-separated ``front<TAB>back[<TAB>tags]`` records, quoted with CSV rules."""
    return _parse_table(text, "\t", title=title, max_cards=max_cards)


def parse_anki_text(
    text: str, *, title: str | None = None, max_cards: int = MAX_CARDS
) -> ParsedDeck:
    """Parse Anki's "Notes in Plain Text" export (``#separator:``, ``#html:``, ... headers).

    The first note field is the front and the second the back; further non-empty fields (such
    as a cloze note's "Back Extra") are added to the back after a blank line rather than lost.
    With ``#html:true`` the fields are turned into plain text, see ``_html_to_text``.
    """
    text = _prepare(text)
    deck_title = _resolve_title(title)
    lines = _split_lines(text)
    header, pos = _read_anki_header(lines)

    cards: list[ParsedCard] = []
    skipped: list[SkippedCard] = []
    number = 0
    records = _csv_records(
        lines, start=pos, delimiter=header.separator, skip_comments=True, skip_spaces=False
    )
    for line, row in records:
        if _is_blank(row):
            continue
        number += 1
        _check_card_count(number, max_cards, line)
        front, back, extras = _anki_fields(row, header, line)
        if header.html:
            front, back = _html_to_text(front, line), _html_to_text(back, line)
            extras = [_html_to_text(extra, line) for extra in extras]
        else:
            front, back, extras = front.strip(), back.strip(), [e.strip() for e in extras]
        back = "\n\n".join(part for part in (back, *extras) if part)
        tags = _join_tags(header.tags, _split_tags(_cell(row, header.tags_column), commas=False))
        _add_card(cards, skipped, front, back, tags, line, number)
    return _finish(deck_title, cards, skipped, number, header.last_line)


def parse_quizlet_text(
    text: str, *, title: str | None = None, max_cards: int = MAX_CARDS
) -> ParsedDeck:
    """Parse Quizlet's export: ``term<TAB>definition`` on each line, quotes taken literally.

    The term ends at the first tab; any later tab belongs to the definition.
    """
    text = _prepare(text)
    deck_title = _resolve_title(title)
    cards: list[ParsedCard] = []
    skipped: list[SkippedCard] = []
    number = 0
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if "\t" not in raw:
            raise DeckFormatError(
                line,
                f"the line has no tab: {_preview(raw.strip())}; each line of a Quizlet export "
                "is a term, a tab, then the definition",
            )
        number += 1
        _check_card_count(number, max_cards, line)
        front, back = raw.split("\t", 1)
        _add_card(cards, skipped, front.strip(), back.strip(), "", line, number)
    return _finish(deck_title, cards, skipped, number, None)


def render_seed_text(title: str, cards: list[tuple[str, str]]) -> str:
    """Render cards in the seed format, so that ``parse_seed_text`` reads them back unchanged.

    Fields are normalised the way the parser normalises them. Raises ``ValueError`` for content
    the format cannot represent, such as a question with a line that is only ``A``.
    """
    title = _normalise_newlines(title).strip()
    if "\n" in title or _CONTROL_CHARS.search(title):
        raise ValueError("The title must be a single line of text")
    if not title:
        raise ValueError("The title must not be blank")

    out = [title, ""]
    for number, (raw_front, raw_back) in enumerate(cards, start=1):
        front = _clean_field(raw_front, number, "question")
        back = _clean_field(raw_back, number, "answer")
        for line in front.split("\n"):
            if line.strip() in (ANSWER_MARKER, SCALE_HEADER):
                raise ValueError(
                    f"Card {number}: the question cannot contain a line {line.strip()!r}, "
                    "because the format would read it as a marker"
                )
        for line in back.split("\n"):
            if line.strip() == SCALE_HEADER:
                raise ValueError(
                    f"Card {number}: the answer cannot contain a line {SCALE_HEADER!r}, "
                    "because the format would read it as the end of the answer"
                )
        out += [str(number), QUESTION_MARKER]
        # The seed pads non-empty fields with blank lines but writes empty ones as nothing.
        if front:
            out += ["", front, ""]
        out.append(ANSWER_MARKER)
        if back:
            out += ["", back, ""]
        out.append(SCALE_HEADER)
        out += SCALE_LINES
    return "\n".join(out) + "\n"


def render_csv(cards: list[tuple[str, str, str]]) -> str:
    """Render ``(front, back, tags)`` cards as CSV with a ``front,back,tags`` header row.

    ``parse_deck`` reads the result back (as "csv", also when detecting the format) with the
    same fields, apart from whitespace around fields and between tags, which it normalises.

    The export is for re-importing, so fields starting with ``=``, ``+``, ``-`` or ``@`` are
    written as they are: neutralising spreadsheet formulas (as the progress CSVs do) would
    change the cards on the way back in.
    """
    out = io.StringIO()
    # CRLF between records as RFC 4180 and Excel expect; newlines inside (quoted) fields stay
    # "\n". The importer reads either.
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(("front", "back", "tags"))
    for front, back, tags in cards:
        writer.writerow((_export_field(front), _export_field(back), " ".join(tags.split())))
    return out.getvalue()


@dataclass(frozen=True)
class _Columns:
    """Where a table's fields are: 0-based indices, and how many columns a row may have."""

    front: int
    back: int
    tags: int | None
    width: int
    header_line: int | None


_NO_HEADER = _Columns(front=0, back=1, tags=2, width=3, header_line=None)


def _parse_table(text: str, delimiter: str, *, title: str | None, max_cards: int) -> ParsedDeck:
    text = _prepare(text)
    deck_title = _resolve_title(title)
    separator = _SEPARATOR_NAMES[delimiter]
    columns: _Columns | None = None
    cards: list[ParsedCard] = []
    skipped: list[SkippedCard] = []
    number = 0
    records = _csv_records(
        _split_lines(text), start=0, delimiter=delimiter, skip_comments=False, skip_spaces=True
    )
    for line, row in records:
        if _is_blank(row):
            continue
        if columns is None:
            columns = _header_columns(row, line) or _NO_HEADER
            if columns.header_line is not None:
                continue
        row = _checked_row(row, columns, separator, line)
        number += 1
        _check_card_count(number, max_cards, line)
        tags = _join_tags("", _split_tags(_cell(row, columns.tags), commas=True))
        _add_card(
            cards,
            skipped,
            row[columns.front].strip(),
            row[columns.back].strip(),
            tags,
            line,
            number,
        )
    header_line = columns.header_line if columns else None
    return _finish(deck_title, cards, skipped, number, header_line)


def _header_columns(row: list[str], line: int) -> _Columns | None:
    """The columns a header row names, or None when the row is not a header (but a card)."""
    names = [cell.strip().lower() for cell in row]
    while names and not names[-1]:
        names.pop()
    roles = [_HEADER_ROLES.get(name) for name in names]
    # A header needs both sides named; "Question,Answer" as a card is far less likely than as
    # a header, and anything else is a card.
    if "front" not in roles or "back" not in roles:
        return None
    for index, (name, role) in enumerate(zip(names, roles, strict=True)):
        if role is None:
            found = repr(row[index].strip()) if name else "a blank name"
            raise DeckFormatError(
                line,
                f"the header row has {found} for column {index + 1}; the columns can be "
                "front (or question, term), back (or answer, definition) and tags",
            )
        if roles.index(role) != index:
            raise DeckFormatError(
                line,
                f"the header row names the {role} column twice "
                f"(columns {roles.index(role) + 1} and {index + 1})",
            )
    return _Columns(
        front=roles.index("front"),
        back=roles.index("back"),
        tags=roles.index("tags") if "tags" in roles else None,
        width=len(roles),
        header_line=line,
    )


def _checked_row(row: list[str], columns: _Columns, separator: str, line: int) -> list[str]:
    # Spreadsheets pad rows with empty cells up to the widest row; those carry nothing.
    row = list(row)
    while len(row) > columns.width and not row[-1].strip():
        row.pop()
    count = len(row)
    if columns.header_line is None:
        if count == 1:
            raise DeckFormatError(
                line,
                f"the row has only one column: {_preview(row[0].strip())}; expected the front "
                f"and the back separated by a {separator}",
            )
        if count > columns.width:
            raise DeckFormatError(
                line,
                f"the row has {count} columns; expected 2 or 3 (front, back, tags). A field "
                f"that contains a {separator} must be in double quotes",
            )
        return row
    if count > columns.width:
        raise DeckFormatError(
            line,
            f"the row has {count} columns, more than the {columns.width} of the header row "
            f"(line {columns.header_line}). A field that contains a {separator} must be in "
            "double quotes",
        )
    if count <= max(columns.front, columns.back):
        raise DeckFormatError(
            line,
            f"the row has {count} column{'s' if count > 1 else ''}; the header row "
            f"(line {columns.header_line}) has {columns.width}",
        )
    return row


@dataclass
class _AnkiHeader:
    separator: str = "\t"
    html: bool = False
    # 0-based; None when the file has no such column.
    tags_column: int | None = None
    # Every column that is not a note field: tags, deck, notetype, guid.
    special_columns: frozenset[int] = frozenset()
    # Tags that "#tags:" adds to every note.
    tags: str = ""
    # The front and back columns, when "#columns:" names them.
    front_column: int | None = None
    back_column: int | None = None
    last_line: int | None = None


def _read_anki_header(lines: list[str]) -> tuple[_AnkiHeader, int]:
    """Read the ``#key:value`` lines at the top, as Anki does; returns them and the next index."""
    header = _AnkiHeader()
    special: dict[int, str] = {}
    columns_value: str | None = None
    pos = 0
    while pos < len(lines) and lines[pos].startswith("#"):
        line = pos + 1
        key, colon, value = lines[pos].rstrip("\n")[1:].partition(":")
        key = key.strip().lower()
        pos += 1
        if not colon:
            continue
        if key == "separator":
            header.separator = _anki_separator(value, line)
        elif key == "html":
            if value.strip().lower() not in ("true", "false"):
                raise DeckFormatError(
                    line, f"the '#html:' header must be true or false, not {_preview(value)}"
                )
            header.html = value.strip().lower() == "true"
        elif key in _ANKI_COLUMN_KEYS:
            column = _anki_column(key, value, line)
            if column in special:
                raise DeckFormatError(
                    line,
                    f"the '#{key}:' header names column {column + 1}, which is already the "
                    f"{special[column]}",
                )
            special[column] = key
            if key == "tags column":
                header.tags_column = column
        elif key == "columns":
            columns_value = value
        elif key == "tags":
            header.tags = " ".join(value.split())
        header.last_line = line
    header.special_columns = frozenset(special)
    # "#columns:" is split after the loop because it uses the separator, which may come later.
    if columns_value is not None:
        _apply_anki_column_names(header, columns_value)
    return header, pos


def _anki_separator(value: str, line: int) -> str:
    named = _ANKI_SEPARATORS.get(value.strip().lower())
    if named:
        return named
    # A literal character, which may be a space, so the value is not stripped first.
    if len(value) == 1 and value not in '"\n':
        return value
    raise DeckFormatError(
        line,
        "the '#separator:' header must be Tab, Comma, Semicolon, Pipe, Space, Colon or a "
        f"single character, not {_preview(value)}",
    )


def _anki_column(key: str, value: str, line: int) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise DeckFormatError(
            line,
            f"the '#{key}:' header must be a column number (1, 2, 3, ...), not {_preview(text)}",
        )
    return int(text) - 1


def _apply_anki_column_names(header: _AnkiHeader, value: str) -> None:
    try:
        names = next(csv.reader([value], delimiter=header.separator), [])
    except csv.Error:
        # Column names only refine the layout; without them the fields are taken in order.
        return
    roles = [_HEADER_ROLES.get(name.strip().lower()) for name in names]
    if "front" in roles and "back" in roles:
        header.front_column = roles.index("front")
        header.back_column = roles.index("back")
    if header.tags_column is None and "tags" in roles:
        header.tags_column = roles.index("tags")
        header.special_columns |= {header.tags_column}


def _anki_fields(row: list[str], header: _AnkiHeader, line: int) -> tuple[str, str, list[str]]:
    """The front, back and any further note fields of a record."""
    separator = _describe_separator(header.separator)
    if header.front_column is not None and header.back_column is not None:
        needed = max(header.front_column, header.back_column) + 1
        if len(row) < needed:
            raise DeckFormatError(
                line,
                f"the note has {len(row)} column(s); the '#columns:' header puts the front "
                f"and back in columns {header.front_column + 1} and {header.back_column + 1}",
            )
        named = {header.front_column, header.back_column}
        extras = [
            row[index]
            for index in range(len(row))
            if index not in named and index not in header.special_columns
        ]
        return row[header.front_column], row[header.back_column], extras
    fields = [row[index] for index in range(len(row)) if index not in header.special_columns]
    if len(fields) < 2:
        raise DeckFormatError(
            line,
            f"the note has {len(fields)} field(s); expected at least a front and a back "
            f"separated by {separator}",
        )
    return fields[0], fields[1], fields[2:]


def _html_to_text(value: str, line: int) -> str:
    """Turn an Anki HTML field into the plain text (with Markdown) that cards hold.

    The card renderer runs markdown-it with raw HTML disabled, so HTML kept as it is would show
    its tags as text. Line structure survives as newlines (``<br>``, and ``<div>``/``<p>``
    blocks, which is how Anki's editor writes lines); every other tag is dropped, keeping its
    text, and entities are decoded. A non-breaking space becomes a plain one, since Anki's
    editor inserts them where the author typed ordinary spaces.
    """
    value = _HTML_BR.sub("\n", value)
    value = _HTML_BLOCK_BOUNDARY.sub("\n", value)
    value = _HTML_BLOCK_TAG.sub("\n", value)
    value = _HTML_TAG.sub("", value)
    value = _normalise_newlines(html.unescape(value)).replace("\xa0", " ")
    # An entity such as "&#7;" decodes to a control character the raw text could not contain.
    match = _CONTROL_CHARS.search(value)
    if match:
        raise DeckFormatError(
            line,
            f"a field contains a control character (U+{ord(match.group()):04X}) once its HTML "
            "entities are decoded",
        )
    # Empty blocks ("<div><br></div>") would otherwise leave runs of blank lines.
    return _MANY_NEWLINES.sub("\n\n", value).strip()


def _csv_records(
    lines: list[str],
    *,
    start: int,
    delimiter: str,
    skip_comments: bool,
    skip_spaces: bool,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, row)`` for each CSV record in ``lines[start:]``, ``line`` being 1-based.

    ``line`` is the physical line the record starts on, which is what an error should name
    for a record spanning several lines (``reader.line_num`` is where it ends). The reader
    pulls lines one at a time, so the feeder knows when a record starts. An empty line is a
    record of its own (``[]``). With ``skip_comments`` a line starting with ``#`` where a
    record would start is skipped, as Anki does.
    """
    pos = start
    record_line = start + 1
    at_record_start = True

    def feed() -> Iterator[str]:
        nonlocal pos, record_line, at_record_start
        while pos < len(lines):
            text = lines[pos]
            pos += 1
            if at_record_start:
                if skip_comments and text.startswith("#"):
                    continue
                record_line = pos
                at_record_start = False
            yield text

    # strict: a stray quote is an error naming its line, instead of silently swallowing the
    # rest of the file into one field. skipinitialspace: `a, "b, c"` is two fields, as meant.
    reader = csv.reader(
        feed(), delimiter=delimiter, quotechar='"', strict=True, skipinitialspace=skip_spaces
    )
    while True:
        at_record_start = True
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DeckFormatError(record_line, _csv_error_message(str(exc))) from None
        yield record_line, row


def _csv_error_message(error: str) -> str:
    if "unexpected end of data" in error:
        return (
            "a field that starts with a double quote is never closed, so the rest of the file "
            'would be part of it; add the closing " (and write a " inside a quoted field as "")'
        )
    if "expected after" in error:
        return (
            "a quoted field has more text after its closing double quote; put the whole field "
            'in quotes and write each " inside it as ""'
        )
    if "field larger than field limit" in error:
        return f"a field is longer than the limit of {MAX_FIELD_CHARS:,} characters"
    return f"the row could not be read ({error})"


def _looks_like_seed(lines: list[str]) -> bool:
    content = [line.strip() for line in lines]
    pos = 0
    while pos < len(content) and not content[pos]:
        pos += 1
    pos += 1  # The title.
    while pos < len(content) and not content[pos]:
        pos += 1
    return content[pos : pos + 2] == ["1", QUESTION_MARKER]


def _is_anki_header(line: str) -> bool:
    key, colon, _ = line.removeprefix("#").partition(":")
    return line.startswith("#") and bool(colon) and key.strip().lower() in _ANKI_KEYS


def _count_unquoted_separators(line: str) -> tuple[int, int]:
    """Count the tabs and commas outside CSV-quoted fields, for either separator."""
    tabs = commas = 0
    in_quotes = False
    field_start = True
    pos = 0
    while pos < len(line):
        char = line[pos]
        if in_quotes:
            if char == '"':
                if line[pos + 1 : pos + 2] == '"':
                    pos += 1
                else:
                    in_quotes = False
        elif char == '"' and field_start:
            in_quotes = True
        elif char == "\t":
            tabs += 1
        elif char == ",":
            commas += 1
        # Spaces after a separator still count as the start of a field (skipinitialspace).
        field_start = not in_quotes and (char in "\t," or (field_start and char == " "))
        pos += 1
    return tabs, commas


def _looks_like_quizlet(lines: list[str]) -> bool:
    if any(line.count("\t") != 1 for line in lines):
        return False
    return any(_has_literal_quote(field) for line in lines for field in line.split("\t"))


def _has_literal_quote(field: str) -> bool:
    """True when a field starts with a quote but is not a complete CSV-quoted field."""
    field = field.strip()
    if not field.startswith('"'):
        return False
    inner = field[1:-1].replace('""', "")
    return len(field) < 2 or not field.endswith('"') or '"' in inner


def _check_card_count(number: int, max_cards: int, line: int) -> None:
    if number > max_cards:
        raise DeckFormatError(line, f"the file has more than {max_cards:,} cards, the limit")


def _add_card(
    cards: list[ParsedCard],
    skipped: list[SkippedCard],
    front: str,
    back: str,
    tags: str,
    line: int,
    number: int,
) -> None:
    for field, name in ((front, "front"), (back, "back")):
        if len(field) > MAX_FIELD_CHARS:
            raise DeckFormatError(
                line,
                f"the {name} of card {number} is {len(field):,} characters long; "
                f"the limit is {MAX_FIELD_CHARS:,}",
            )
    if len(tags) > MAX_TAGS_CHARS:
        raise DeckFormatError(
            line,
            f"the tags of card {number} are {len(tags):,} characters long; "
            f"the limit is {MAX_TAGS_CHARS:,}",
        )
    reason = _empty_reason(front, back)
    if reason:
        skipped.append(SkippedCard(number=number, line=line, reason=reason))
    else:
        cards.append(ParsedCard(front=front, back=back, line=line, number=number, tags=tags))


def _finish(
    title: str,
    cards: list[ParsedCard],
    skipped: list[SkippedCard],
    number: int,
    header_line: int | None,
) -> ParsedDeck:
    if number == 0:
        if header_line is not None:
            raise DeckFormatError(header_line, "the file has no cards; it ends after the header")
        raise DeckFormatError(1, "the file has no cards (it is empty)")
    return _deck(title, cards, skipped)


def _deck(title: str, cards: list[ParsedCard], skipped: list[SkippedCard]) -> ParsedDeck:
    """The parsed deck, unless every card in the file was skipped as empty."""
    if not cards:
        raise DeckFormatError(
            skipped[0].line,
            f"the file has no cards with both a question and an answer "
            f"({len(skipped)} empty card(s) skipped)",
        )
    return ParsedDeck(title=title, cards=cards, skipped=skipped)


def _resolve_title(title: str | None) -> str:
    title = " ".join((title or "").split())
    if not title:
        return DEFAULT_TITLE
    if len(title) > MAX_TITLE_CHARS:
        raise DeckFormatError(
            None, f"The title is {len(title):,} characters long; the limit is {MAX_TITLE_CHARS:,}"
        )
    return title


def _split_tags(value: str, *, commas: bool) -> list[str]:
    # Anki separates tags with spaces only; in CSV files people also write "biology, cells".
    if commas:
        return [tag for tag in _TAG_SEPARATORS.split(value) if tag]
    return value.split()


def _join_tags(first: str, more: list[str]) -> str:
    # dict keeps order and drops repeats.
    return " ".join(dict.fromkeys([*first.split(), *more]))


def _cell(row: list[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index]


def _is_blank(row: list[str]) -> bool:
    return len(row) <= 1 and not "".join(row).strip()


def _split_lines(text: str) -> list[str]:
    """Split on "\\n" only, keeping the newlines for the csv module.

    ``str.splitlines`` would also split on U+2028 and friends, which are text here and would
    put the line numbers out of step with what an editor shows.
    """
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


def _prepare(text: str, *, check: bool = True) -> str:
    text = _normalise_newlines(text.removeprefix("\ufeff"))
    if check:
        _check_control_chars(text)
    return text


def _export_field(value: str) -> str:
    # The importer rejects control characters (other than tab and newline), and an export must
    # never fail, so they are dropped rather than raised about.
    return _CONTROL_CHARS.sub("", _normalise_newlines(value))


def _describe_separator(separator: str) -> str:
    if separator == "\t":
        return "tabs"
    if separator == " ":
        return "spaces"
    return repr(separator)


def _describe_sizes(size: int, limit: int) -> tuple[str, str]:
    """Describe a size and the limit it exceeds in the limit's unit: ("12.3 MB", "10 MB")."""
    if limit >= 1024 * 1024:
        unit, name = 1024 * 1024, "MB"
    elif limit >= 1024:
        unit, name = 1024, "KB"
    else:
        return f"{size:,} bytes", f"{limit:,} bytes"
    shown_limit = limit * 10 // unit  # tenths, rounded down
    shown_size = (size * 10 + unit // 2) // unit  # tenths, rounded to nearest
    if shown_size <= shown_limit:
        # Just over the limit: round up instead, so the size never reads as within it.
        shown_size = shown_limit + 1
    return f"{_tenths(shown_size)} {name}", f"{_tenths(shown_limit)} {name}"


def _tenths(value: int) -> str:
    whole, tenth = divmod(value, 10)
    return f"{whole:,}" if tenth == 0 else f"{whole:,}.{tenth}"


_PARSERS: dict[str, Callable[..., ParsedDeck]] = {
    "csv": parse_csv_text,
    "tsv": parse_tsv_text,
    "anki": parse_anki_text,
    "quizlet": parse_quizlet_text,
}


class _SeedParser:
    """A cursor over the lines; markers only count in the state where they are expected."""

    def __init__(self, lines: list[str], max_cards: int) -> None:
        self.lines = lines
        self.max_cards = max_cards
        self.pos = 0

    def parse(self) -> ParsedDeck:
        self._skip_blank()
        if self._at_end():
            raise DeckFormatError(1, "the file has no title line (it is empty)")
        if self._card_starts_here(1):
            raise DeckFormatError(
                self._line_no(), "the file has no title line; it starts with card 1"
            )
        title = self._current()
        if len(title) > MAX_TITLE_CHARS:
            raise DeckFormatError(
                self._line_no(),
                f"the title is {len(title):,} characters long; the limit is {MAX_TITLE_CHARS:,}",
            )
        title_line = self._line_no()
        self.pos += 1

        cards: list[ParsedCard] = []
        skipped: list[SkippedCard] = []
        number = 1
        while True:
            self._skip_blank()
            if self._at_end():
                break
            card = self._parse_card(number)
            reason = _empty_reason(card.front, card.back)
            if reason:
                skipped.append(SkippedCard(number=number, line=card.line, reason=reason))
            else:
                cards.append(card)
            number += 1

        if number == 1:
            raise DeckFormatError(title_line, "the file has no cards; it ends after the title")
        return _deck(title, cards, skipped)

    def _parse_card(self, number: int) -> ParsedCard:
        start = self._line_no()
        found = self._current()
        if found != str(number):
            raise DeckFormatError(
                start,
                f"expected card number {number}, found {_preview(found)} "
                "(cards must be numbered 1, 2, 3, ... in order)",
            )
        _check_card_count(number, self.max_cards, start)
        self.pos += 1
        if self._at_end():
            raise DeckFormatError(
                self._eof_line(), f"the file ends after card number {number}; expected a line 'Q'"
            )
        if self._current() != QUESTION_MARKER:
            found = _preview(self._current())
            raise DeckFormatError(
                self._line_no(), f"expected a line 'Q' after card number {number}, found {found}"
            )
        question_line = self._line_no()
        self.pos += 1

        question: list[str] = []
        while True:
            if self._at_end():
                raise DeckFormatError(
                    self._eof_line(),
                    f"the file ends in the question of card {number}, before its 'A' line",
                )
            marker = self._current()
            if marker == ANSWER_MARKER:
                break
            if marker == SCALE_HEADER:
                raise DeckFormatError(
                    self._line_no(), f"card {number} has 'Q' but no 'A' before the rating scale"
                )
            question.append(self.lines[self.pos])
            self.pos += 1
        answer_line = self._line_no()
        self.pos += 1

        answer: list[str] = []
        while True:
            if self._at_end():
                raise DeckFormatError(
                    self._eof_line(),
                    f"the file ends in the answer of card {number}, before the line "
                    f"{SCALE_HEADER!r}",
                )
            if self._current() == SCALE_HEADER:
                break
            answer.append(self.lines[self.pos])
            self.pos += 1
        self.pos += 1
        self._skip_scale(number)

        front = _join_field(question)
        back = _join_field(answer)
        for field, name, line in (
            (front, "question", question_line),
            (back, "answer", answer_line),
        ):
            if len(field) > MAX_FIELD_CHARS:
                raise DeckFormatError(
                    line,
                    f"the {name} of card {number} is {len(field):,} characters long; "
                    f"the limit is {MAX_FIELD_CHARS:,}",
                )
        return ParsedCard(front=front, back=back, line=start, number=number)

    def _skip_scale(self, number: int) -> None:
        for expected in SCALE_LINES:
            # Running out of lines here can only happen at the end of the file, where a cut-off
            # scale is harmless because the card itself is complete.
            if self._at_end():
                return
            found = self._current()
            if found != expected:
                raise DeckFormatError(
                    self._line_no(),
                    f"the rating scale of card {number} is incomplete: expected {expected!r}, "
                    f"found {_preview(found)}",
                )
            self.pos += 1

    def _card_starts_here(self, number: int) -> bool:
        return (
            self.pos + 1 < len(self.lines)
            and self._current() == str(number)
            and self.lines[self.pos + 1].strip() == QUESTION_MARKER
        )

    def _skip_blank(self) -> None:
        while not self._at_end() and not self._current():
            self.pos += 1

    def _at_end(self) -> bool:
        return self.pos >= len(self.lines)

    def _current(self) -> str:
        return self.lines[self.pos].strip()

    def _line_no(self) -> int:
        return self.pos + 1

    def _eof_line(self) -> int:
        # Points at the last line with content: the line after it may not exist in an editor.
        return max(len(self.lines), 1)


def _empty_reason(front: str, back: str) -> str:
    if not front and not back:
        return "question and answer are both empty"
    if not front:
        return "the question is empty"
    if not back:
        return "the answer is empty"
    return ""


def _join_field(lines: list[str]) -> str:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return "\n".join(line.rstrip() for line in lines[start:end])


def _clean_field(value: str, number: int, name: str) -> str:
    value = _normalise_newlines(value)
    if _CONTROL_CHARS.search(value):
        raise ValueError(f"Card {number}: the {name} contains a control character")
    return _join_field(value.split("\n"))


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _check_control_chars(text: str) -> None:
    match = _CONTROL_CHARS.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise DeckFormatError(
            line,
            f"the text contains a control character (U+{ord(match.group()):04X}), "
            "which is not allowed",
        )


def _byte_line(data: bytes, offset: int) -> int:
    before = data[:offset].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return before.count(b"\n") + 1


def _looks_like_utf16(data: bytes) -> bool:
    # Mostly-ASCII UTF-16 has a NUL in every other byte, all on the same side; binary formats
    # scatter their NULs.
    sample = data[:4096]
    pairs = len(sample) // 2
    if pairs == 0:
        return False
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    high, low = max(even, odd), min(even, odd)
    return high >= pairs * 0.3 and low <= high * 0.05


def _preview(found: str) -> str:
    if not found:
        return "a blank line"
    if len(found) > _PREVIEW_CHARS:
        found = found[: _PREVIEW_CHARS - 3] + "..."
    return repr(found)
