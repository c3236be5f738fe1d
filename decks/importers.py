from __future__ import annotations

import re
from dataclasses import dataclass

# Import and export of the plain-text flashcard format used by the demo seeds.
#
# The format, as produced by a common flashcard website's "copy" feature::
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
# This module is deliberately free of Django imports so that it can be tested and reused without
# settings or a database; callers turn a ``ParsedDeck`` into model instances.

MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_CARDS = 100_000
MAX_FIELD_CHARS = 20_000
# Matches Deck.title's max_length, so an over-long title fails here with a line number instead
# of in the database.
MAX_TITLE_CHARS = 200

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


def decode_upload(data: bytes) -> str:
    """Decode an uploaded file as UTF-8 text with ``\\n`` newlines, or explain why it is not."""
    if not data or data == _UTF8_BOM:
        raise DeckFormatError(None, "The file is empty")
    if len(data) > MAX_IMPORT_BYTES:
        raise DeckFormatError(
            None,
            f"The file is {len(data):,} bytes; the limit is {MAX_IMPORT_BYTES:,} bytes "
            f"({MAX_IMPORT_BYTES // (1024 * 1024)} MB)",
        )
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


def parse_seed_text(text: str) -> ParsedDeck:
    """Parse the seed format, raising ``DeckFormatError`` with a 1-based line for any problem."""
    text = _normalise_newlines(text.removeprefix("\ufeff"))
    if len(text) > MAX_IMPORT_BYTES:
        raise DeckFormatError(
            None, f"The text is longer than the limit of {MAX_IMPORT_BYTES:,} characters"
        )
    _check_control_chars(text)
    lines = [line.rstrip() for line in text.split("\n")]
    # Trailing blank lines carry no meaning; dropping them lets "end of file" mean "end of
    # content" everywhere below, including for a truncated final rating scale.
    while lines and not lines[-1]:
        lines.pop()
    return _SeedParser(lines).parse()


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


class _SeedParser:
    """A cursor over the lines; markers only count in the state where they are expected."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
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
        if not cards:
            raise DeckFormatError(
                skipped[0].line,
                f"the file has no cards with both a question and an answer "
                f"({len(skipped)} empty card(s) skipped)",
            )
        return ParsedDeck(title=title, cards=cards, skipped=skipped)

    def _parse_card(self, number: int) -> ParsedCard:
        start = self._line_no()
        found = self._current()
        if found != str(number):
            raise DeckFormatError(
                start,
                f"expected card number {number}, found {_preview(found)} "
                "(cards must be numbered 1, 2, 3, ... in order)",
            )
        if number > MAX_CARDS:
            raise DeckFormatError(start, f"the file has more than {MAX_CARDS:,} cards")
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
