from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decks import importers
from decks.importers import (
    MAX_FIELD_CHARS,
    MAX_IMPORT_BYTES,
    SCALE_HEADER,
    DeckFormatError,
    ParsedCard,
    ParsedDeck,
    SkippedCard,
    decode_upload,
    parse_seed_text,
    render_seed_text,
)

SEED_PATH = Path(__file__).resolve().parents[1] / "decks" / "demo" / "cnn_week2.txt"
SCALE = "How well did you know this?\n1\nNot at all\n2\n3\n4\n5\nPerfectly\n"


@pytest.fixture(scope="module")
def seed_bytes() -> bytes:
    return SEED_PATH.read_bytes()


@pytest.fixture(scope="module")
def seed_text(seed_bytes: bytes) -> str:
    return decode_upload(seed_bytes)


def card(number: int, front: str, back: str) -> str:
    return f"{number}\nQ\n\n{front}\n\nA\n\n{back}\n\n{SCALE}"


def deck(*cards: str, title: str = "My deck") -> str:
    return f"{title}\n\n" + "".join(cards)


def error_for(text: str) -> DeckFormatError:
    with pytest.raises(DeckFormatError) as info:
        parse_seed_text(text)
    return info.value


def decode_error_for(data: bytes) -> DeckFormatError:
    with pytest.raises(DeckFormatError) as info:
        decode_upload(data)
    return info.value


# The real seed file


def test_seed_title(seed_text: str) -> None:
    assert parse_seed_text(seed_text).title == "week 2 - CNN's Flashcards"


def test_seed_has_twelve_cards_in_order(seed_text: str) -> None:
    cards = parse_seed_text(seed_text).cards
    assert [c.number for c in cards] == list(range(1, 13))
    assert cards[0].line == 3
    assert all(c.front and c.back for c in cards)


def test_seed_card_1(seed_text: str) -> None:
    first = parse_seed_text(seed_text).cards[0]
    assert first.front == "what is a CNN convolutional layer"
    lines = first.back.split("\n")
    assert len(lines) == 3
    assert "" not in lines
    assert lines[0].startswith("This layer applies convolutional filters")
    assert "\u201cconvolves\u201d" in first.back


def test_seed_card_8_keeps_paragraphs(seed_text: str) -> None:
    eighth = parse_seed_text(seed_text).cards[7]
    assert eighth.front == "how does neural style transfer work"
    assert "\n\n" in eighth.back
    paragraphs = eighth.back.split("\n\n")
    assert len(paragraphs) == 6
    assert paragraphs[0] == (
        "you train an image classifier on natural images to recognise patterns in images"
    )
    # The source line ends in a space before its newline.
    assert paragraphs[-1] == (
        "pixels are then adjusted to minimise in balance the content loss and the style loss "
        "functions"
    )


def test_seed_card_12_has_four_paragraphs(seed_text: str) -> None:
    twelfth = parse_seed_text(seed_text).cards[11]
    paragraphs = twelfth.back.split("\n\n")
    assert len(paragraphs) == 4
    assert paragraphs[1] == "it is a reverse operation of convolution which downsamples."


def test_seed_keeps_other_unicode(seed_text: str) -> None:
    cards = parse_seed_text(seed_text).cards
    assert cards[6].front == "what else can you use CNN\u2019s for?"


def test_seed_empty_card_13_is_skipped_and_reported(seed_text: str) -> None:
    parsed = parse_seed_text(seed_text)
    assert parsed.skipped == [
        SkippedCard(number=13, line=247, reason="question and answer are both empty")
    ]
    assert seed_text.split("\n")[246] == "13"


def test_seed_decodes_to_its_own_text(seed_bytes: bytes, seed_text: str) -> None:
    assert seed_text == seed_bytes.decode("utf-8")


def test_seed_with_windows_line_endings_parses_the_same(seed_text: str) -> None:
    crlf = seed_text.replace("\n", "\r\n")
    assert parse_seed_text(crlf) == parse_seed_text(seed_text)
    assert parse_seed_text(decode_upload(crlf.encode())) == parse_seed_text(seed_text)


def test_seed_with_old_mac_line_endings_parses_the_same(seed_text: str) -> None:
    assert parse_seed_text(seed_text.replace("\n", "\r")) == parse_seed_text(seed_text)


def test_seed_with_utf8_bom_parses_the_same(seed_bytes: bytes, seed_text: str) -> None:
    decoded = decode_upload(b"\xef\xbb\xbf" + seed_bytes)
    assert parse_seed_text(decoded) == parse_seed_text(seed_text)


def test_rendering_the_seed_cards_round_trips(seed_text: str) -> None:
    parsed = parse_seed_text(seed_text)
    rendered = render_seed_text(parsed.title, [(c.front, c.back) for c in parsed.cards])
    assert rendered.endswith("Perfectly\n")
    # Same layout, so even the line numbers survive; only the empty card 13 is gone.
    assert parse_seed_text(rendered) == ParsedDeck(
        title=parsed.title, cards=parsed.cards, skipped=[]
    )


def test_render_reproduces_the_seed_layout_exactly(seed_text: str) -> None:
    parsed = parse_seed_text(seed_text)
    cards = [(c.front, c.back) for c in parsed.cards] + [("", "")]
    # The seed lacks a final newline; everything else is byte-for-byte the same.
    assert render_seed_text(parsed.title, cards) == seed_text + "\n"


# Parsing details


def test_answer_lines_that_look_like_markers_are_answer_text() -> None:
    text = deck(
        card(1, "What is the answer?", "42\nQ\nA\n3\nNot at all\nPerfectly"),
        card(2, "Next", "Yes"),
    )
    parsed = parse_seed_text(text)
    assert [c.back for c in parsed.cards] == ["42\nQ\nA\n3\nNot at all\nPerfectly", "Yes"]


def test_question_may_contain_q_and_numbers() -> None:
    parsed = parse_seed_text(deck(card(1, "Q\n2\nQ", "answer")))
    assert parsed.cards[0].front == "Q\n2\nQ"


def test_multiline_question_and_trailing_whitespace() -> None:
    text = "T\n\n1\nQ\n\n\n  line one  \n\n\tline two\t\n\n\nA\nback \n\n\n" + SCALE
    only = parse_seed_text(text).cards[0]
    assert only.front == "  line one\n\n\tline two"
    assert only.back == "back"


def test_fields_without_padding_blank_lines() -> None:
    text = "T\n1\nQ\nfront\nA\nback\n" + SCALE + "2\nQ\nf2\nA\nb2\n" + SCALE
    parsed = parse_seed_text(text)
    assert [(c.front, c.back, c.line) for c in parsed.cards] == [
        ("front", "back", 2),
        ("f2", "b2", 15),
    ]


def test_blank_lines_between_cards_and_at_the_end_are_ignored() -> None:
    text = deck(card(1, "a", "b"), "\n\n", card(2, "c", "d"), "\n\n\n")
    assert [c.front for c in parse_seed_text(text).cards] == ["a", "c"]


def test_truncated_scale_at_end_of_file_is_accepted() -> None:
    base = deck(card(1, "a", "b"), card(2, "c", "d"))
    scale_lines = SCALE.split("\n")[:-1]
    # keep >= 1: the header itself must be there, only the scale lines after it may be cut.
    for keep in range(1, len(scale_lines) + 1):
        text = base[: -len(SCALE)] + "\n".join(scale_lines[:keep])
        assert [c.back for c in parse_seed_text(text).cards] == ["b", "d"], keep


def test_card_with_only_one_side_is_skipped_with_reason() -> None:
    text = deck(card(1, "a", "b"), "2\nQ\nA\n\nonly answer\n\n" + SCALE, card(3, "q", ""))
    parsed = parse_seed_text(text)
    assert [c.number for c in parsed.cards] == [1]
    assert parsed.skipped == [
        SkippedCard(number=2, line=20, reason="the question is empty"),
        SkippedCard(number=3, line=34, reason="the answer is empty"),
    ]


def test_title_is_stripped_and_may_follow_blank_lines() -> None:
    parsed = parse_seed_text("\n\n  Spaced title  \n\n" + card(1, "a", "b"))
    assert parsed.title == "Spaced title"
    assert parsed.cards == [ParsedCard(front="a", back="b", line=5, number=1)]


# Parse errors: each names its line


def test_empty_text() -> None:
    for text in ("", "\n\n  \n"):
        err = error_for(text)
        assert err.line == 1
        assert str(err) == "Line 1: the file has no title line (it is empty)"


def test_only_a_title() -> None:
    err = error_for("\nJust a title\n\n")
    assert err.line == 2
    assert str(err) == "Line 2: the file has no cards; it ends after the title"


def test_cards_without_a_title() -> None:
    err = error_for(card(1, "a", "b"))
    assert str(err) == "Line 1: the file has no title line; it starts with card 1"


def test_card_with_q_but_no_a() -> None:
    text = deck(card(1, "a", "b"), "2\nQ\n\nquestion\n\nanswer\n\n" + SCALE)
    err = error_for(text)
    assert err.line == 27
    assert str(err) == "Line 27: card 2 has 'Q' but no 'A' before the rating scale"


def test_truncated_in_the_question() -> None:
    err = error_for(deck(card(1, "a", "b"), "2\nQ\n\nhalf a question\n"))
    assert err.line == 23
    assert str(err) == "Line 23: the file ends in the question of card 2, before its 'A' line"


def test_truncated_in_the_answer() -> None:
    err = error_for(deck(card(1, "a", "b"), "2\nQ\nquestion\nA\nanswer\nmore\n\n"))
    assert err.line == 25
    assert "Line 25: the file ends in the answer of card 2" in str(err)
    assert SCALE_HEADER in str(err)


def test_truncated_after_the_card_number() -> None:
    err = error_for(deck(card(1, "a", "b"), "2\n"))
    assert str(err) == "Line 20: the file ends after card number 2; expected a line 'Q'"


def test_wrong_card_number() -> None:
    err = error_for(deck(card(1, "a", "b"), card(3, "c", "d")))
    assert err.line == 20
    assert str(err).startswith("Line 20: expected card number 2, found '3'")


def test_stray_text_where_a_card_number_is_expected() -> None:
    err = error_for(deck(card(1, "a", "b"), "\nfoo\n", card(2, "c", "d")))
    assert err.line == 21
    assert str(err).startswith("Line 21: expected card number 2, found 'foo'")


def test_stray_text_before_the_first_card() -> None:
    err = error_for("Title\n\nsome notes\n" + card(1, "a", "b"))
    assert str(err).startswith("Line 3: expected card number 1, found 'some notes'")


def test_number_not_followed_by_q() -> None:
    err = error_for(deck(card(1, "a", "b"), "2\n\nQ\n"))
    assert str(err) == "Line 21: expected a line 'Q' after card number 2, found a blank line"


def test_broken_scale_in_the_middle_of_the_file() -> None:
    broken = card(1, "a", "b").replace("5\nPerfectly\n", "5\n")
    err = error_for(deck(broken, card(2, "c", "d")))
    assert err.line == 19
    assert str(err) == (
        "Line 19: the rating scale of card 1 is incomplete: expected 'Perfectly', found '2'"
    )


def test_long_found_text_is_shortened() -> None:
    err = error_for("Title\n\n" + "x" * 500 + "\n")
    assert len(str(err)) < 150
    assert "..." in str(err)


def test_field_longer_than_the_limit() -> None:
    err = error_for(deck(card(1, "ok", "y" * (MAX_FIELD_CHARS + 1))))
    assert err.line == 8
    assert "the answer of card 1 is 20,001 characters long" in str(err)
    # Exactly at the limit is fine.
    assert parse_seed_text(deck(card(1, "ok", "y" * MAX_FIELD_CHARS))).cards


def test_too_many_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers, "MAX_CARDS", 2)
    err = error_for(deck(card(1, "a", "b"), card(2, "c", "d"), card(3, "e", "f")))
    assert err.line == 37
    assert str(err) == "Line 37: the file has more than 2 cards"


def test_title_longer_than_the_limit() -> None:
    err = error_for(deck(card(1, "a", "b"), title="t" * 201))
    assert str(err) == "Line 1: the title is 201 characters long; the limit is 200"


def test_control_character_in_text() -> None:
    err = error_for(deck(card(1, "a", "b\x07c")))
    assert err.line == 10
    assert "U+0007" in str(err)


def test_only_empty_cards() -> None:
    err = error_for("T\n\n1\nQ\nA\n" + SCALE)
    assert err.line == 3
    assert "no cards with both a question and an answer" in str(err)


def test_error_without_line_and_pickling() -> None:
    err = DeckFormatError(None, "The file is empty")
    assert str(err) == "The file is empty"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(DeckFormatError(7, "bad")))
    assert (copy.line, copy.message, str(copy)) == (7, "bad", "Line 7: bad")


# decode_upload


def test_decode_empty() -> None:
    for data in (b"", b"\xef\xbb\xbf"):
        err = decode_error_for(data)
        assert err.line is None
        assert str(err) == "The file is empty"


def test_decode_too_large() -> None:
    err = decode_error_for(b"a" * (MAX_IMPORT_BYTES + 1))
    assert err.line is None
    assert "5,242,881 bytes" in str(err)
    assert decode_upload(b"a" * MAX_IMPORT_BYTES)


def test_decode_binary() -> None:
    err = decode_error_for(b"Title\n\n\x89PNG\x00\x01\x02\xff")
    assert err.line == 3
    assert str(err) == "Line 3: the file contains binary data (byte 0x00), not text"


def test_decode_control_byte_counts_crlf_lines() -> None:
    err = decode_error_for(b"Title\r\n\r\n1\r\nQ\x1b[31m\r\n")
    assert err.line == 4
    assert "0x1B" in str(err)


def test_decode_latin1() -> None:
    data = "Caf\u00e9 deck\n\n1\nQ\nWhat is a caf\u00e9?\n".encode("latin-1")
    err = decode_error_for(data)
    assert err.line == 1
    assert str(err).startswith("Line 1: the file is not UTF-8 text (byte 0xE9")
    err = decode_error_for("Deck\n\n1\nQ\nWhat is a caf\u00e9?\n".encode("latin-1"))
    assert err.line == 5


def test_decode_utf16_with_bom() -> None:
    for encoding in ("utf-16-le", "utf-16-be"):
        err = decode_error_for("\ufeffDeck\n\n1\nQ\n".encode(encoding))
        assert err.line == 1
        assert "the file is UTF-16 text, not UTF-8" in str(err), encoding


def test_decode_utf32_with_bom() -> None:
    err = decode_error_for("Deck\n".encode("utf-32"))
    assert str(err).startswith("Line 1: the file is UTF-32 text, not UTF-8")


def test_decode_utf16_without_bom() -> None:
    err = decode_error_for("Deck\n\n1\nQ\n".encode("utf-16-le"))
    assert err.line == 1
    assert "looks like UTF-16" in str(err)


def test_decode_c1_control_character() -> None:
    err = decode_error_for("ok\nbad \u0085 here\n".encode())
    assert err.line == 2
    assert "U+0085" in str(err)


def test_decode_keeps_unicode_and_normalises_newlines() -> None:
    assert decode_upload("\u201cA\u201d\r\nB\rC\n".encode()) == "\u201cA\u201d\nB\nC\n"


# render_seed_text


def test_render_rejects_unrepresentable_content() -> None:
    with pytest.raises(ValueError, match="question cannot contain a line 'A'"):
        render_seed_text("T", [("before\nA\nafter", "back")])
    with pytest.raises(ValueError, match="answer cannot contain"):
        render_seed_text("T", [("front", f"x\n{SCALE_HEADER}\ny")])
    with pytest.raises(ValueError, match="single line"):
        render_seed_text("two\nlines", [])
    with pytest.raises(ValueError, match="blank"):
        render_seed_text("  ", [])
    with pytest.raises(ValueError, match="control character"):
        render_seed_text("T", [("a\x00", "b")])


# Properties

_SPECIAL_LINES = ["", "  ", "42", "1", "Q", "A", " A ", "Not at all", "Perfectly", SCALE_HEADER]
_line = st.one_of(
    st.sampled_from(_SPECIAL_LINES),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30),
).map(str.rstrip)


def _field(forbidden: set[str]) -> st.SearchStrategy[str]:
    def build(lines: list[str]) -> str:
        kept = [line for line in lines if line.strip() not in forbidden]
        while kept and not kept[0].strip():
            kept.pop(0)
        while kept and not kept[-1].strip():
            kept.pop()
        return "\n".join(kept)

    return st.lists(_line, min_size=1, max_size=6).map(build).filter(lambda s: s.strip() != "")


_fronts = _field({"A", SCALE_HEADER})
_backs = _field({SCALE_HEADER})
_titles = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40).map(
    str.strip
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=_titles.filter(bool),
    cards=st.lists(st.tuples(_fronts, _backs), min_size=1, max_size=8),
    crlf=st.booleans(),
)
def test_render_then_parse_round_trips(
    title: str, cards: list[tuple[str, str]], crlf: bool
) -> None:
    text = render_seed_text(title, cards)
    if crlf:
        text = text.replace("\n", "\r\n")
    parsed = parse_seed_text(decode_upload(text.encode()))
    assert parsed.title == title
    assert [(c.front, c.back) for c in parsed.cards] == cards
    assert [c.number for c in parsed.cards] == list(range(1, len(cards) + 1))
    assert parsed.skipped == []


@settings(deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_arbitrary_input_fails_only_with_deck_format_error(data: bytes) -> None:
    try:
        parse_seed_text(decode_upload(data))
    except DeckFormatError as err:
        assert err.message
        assert err.line is None or err.line >= 1
