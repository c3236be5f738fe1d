from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decks.importers import (
    FORMATS,
    MAX_CARDS,
    MAX_FIELD_CHARS,
    MAX_IMPORT_BYTES,
    SCALE_HEADER,
    DeckFormatError,
    ParsedCard,
    ParsedDeck,
    SkippedCard,
    decode_upload,
    detect_format,
    parse_anki_text,
    parse_csv_text,
    parse_deck,
    parse_quizlet_text,
    parse_seed_text,
    parse_tsv_text,
    render_csv,
    render_seed_text,
)

SEED_PATH = Path(__file__).resolve().parents[1] / "decks" / "demo" / "cnn_week2.txt"
DATA_DIR = Path(__file__).resolve().parent / "data"
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


def deck_error_for(text: str, **kwargs: object) -> DeckFormatError:
    with pytest.raises(DeckFormatError) as info:
        parse_deck(text, **kwargs)
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


def test_too_many_cards() -> None:
    text = deck(card(1, "a", "b"), card(2, "c", "d"), card(3, "e", "f"))
    with pytest.raises(DeckFormatError) as info:
        parse_seed_text(text, max_cards=2)
    assert info.value.line == 37
    assert str(info.value) == "Line 37: the file has more than 2 cards, the limit"
    assert len(parse_seed_text(text, max_cards=3).cards) == 3


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
    # Just over the limit rounds up, so the size never reads as equal to the limit.
    assert str(err) == "The file is 10.1 MB; the limit is 10 MB"
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


# Limits as parameters


def test_decode_limit_is_a_parameter() -> None:
    data = b"a" * int(12.3 * 1024 * 1024)
    with pytest.raises(DeckFormatError) as info:
        decode_upload(data)
    assert str(info.value) == "The file is 12.3 MB; the limit is 10 MB"
    assert decode_upload(data, max_bytes=20 * 1024 * 1024)
    with pytest.raises(DeckFormatError) as info:
        decode_upload(b"a" * 3000, max_bytes=2048)
    assert str(info.value) == "The file is 2.9 KB; the limit is 2 KB"
    with pytest.raises(DeckFormatError) as info:
        decode_upload(b"a" * 101, max_bytes=100)
    assert str(info.value) == "The file is 101 bytes; the limit is 100 bytes"


def test_default_limits() -> None:
    assert MAX_IMPORT_BYTES == 10 * 1024 * 1024
    assert MAX_CARDS == 200_000


@pytest.mark.parametrize(
    ("fmt", "text", "line"),
    [
        ("csv", "front,back\na,b\nc,d\ne,f\n", 4),
        ("tsv", "a\tb\n\nc\td\ne\tf\n", 4),
        ("anki", "#separator:tab\na\tb\nc\td\ne\tf\n", 4),
        ("quizlet", "a\tb\nc\td\ne\tf\n", 3),
        ("seed", deck(card(1, "a", "b"), card(2, "c", "d"), card(3, "e", "f")), 37),
    ],
)
def test_every_format_takes_max_cards(fmt: str, text: str, line: int) -> None:
    assert len(parse_deck(text, format=fmt, max_cards=3).cards) == 3
    err = deck_error_for(text, format=fmt, max_cards=2)
    assert str(err) == f"Line {line}: the file has more than 2 cards, the limit"
    big = f"Line {line}: the file has more than 200,000 cards, the limit"
    assert str(DeckFormatError(line, "the file has more than 200,000 cards, the limit")) == big


def test_parsed_card_tags_default_to_empty() -> None:
    old_style = ParsedCard("front", "back", 3, 1)
    assert old_style.tags == ""
    assert ParsedCard("f", "b", 1, 1, "x y").tags == "x y"


# Sample files


def sample(name: str) -> str:
    return decode_upload((DATA_DIR / name).read_bytes())


def test_sample_csv() -> None:
    text = sample("sample.csv")
    assert detect_format(text) == "csv"
    parsed = parse_deck(text, title="Mixed bag")
    assert parsed.title == "Mixed bag"
    assert len(parsed.cards) == 7
    assert parsed.cards[3] == ParsedCard(
        front="List the steps of gradient descent",
        back=(
            "1. Compute the loss\n2. Compute the gradient of the loss\n3. Step against the gradient"
        ),
        line=5,
        number=4,
        tags="ml optimisation",
    )
    by_front = {c.front: c for c in parsed.cards}
    assert by_front['What does "CNN" stand for?'].back == "Convolutional neural network"
    assert by_front["Name the three primary colours"].back == "Red, yellow and blue"
    assert by_front["Übersetze „Guten Morgen“"].back == "Good morning ☀️"
    assert by_front['Write "hello" in Hebrew'].back == "שלום"
    last = parsed.cards[-1]
    assert (last.front, last.back, last.line, last.number, last.tags) == (
        "What is 日本 in English?",
        "Japan 🇯🇵",
        12,
        8,
        "japanese",
    )
    assert parsed.skipped == [
        SkippedCard(number=7, line=10, reason="question and answer are both empty")
    ]


def test_sample_csv_is_saved_like_excel() -> None:
    raw = (DATA_DIR / "sample.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw


def test_sample_tsv() -> None:
    text = sample("sample.tsv")
    assert detect_format(text) == "tsv"
    parsed = parse_deck(text)
    assert parsed.title == "Imported deck"
    assert len(parsed.cards) == 5
    assert parsed.skipped == []
    third = parsed.cards[2]
    assert third == ParsedCard(
        front='Name the layers of a "typical" CNN',
        back="Convolution\nPooling\nFully connected",
        line=4,
        number=3,
        tags="ml cnn",
    )
    assert parsed.cards[1].back == "max(0, x)"
    assert parsed.cards[3].front == "Ποια είναι η πρωτεύουσα της Ελλάδας;"
    assert parsed.cards[3].line == 7
    assert parsed.cards[4].back.endswith("like this:\t<- here")
    assert parsed.cards[4].tags == ""


def test_sample_anki() -> None:
    text = sample("sample_anki.txt")
    assert detect_format(text) == "anki"
    parsed = parse_deck(text, title="Biology")
    assert len(parsed.cards) == 5
    first = parsed.cards[0]
    assert first == ParsedCard(
        front="What is the powerhouse of the cell?",
        back="The mitochondrion",
        line=4,
        number=1,
        tags="biology cells",
    )
    assert parsed.cards[1].back == "Prophase\nMetaphase\nAnaphase\nTelophase"
    assert parsed.cards[2].back == "Deoxyribonucleic\nacid"
    assert (parsed.cards[3].front, parsed.cards[3].back) == ("Is 5 < 10?", "Yes & always")
    quoted = parsed.cards[4]
    assert quoted.front == 'Who said "To be, or not to be"?'
    assert quoted.back == "Hamlet, Act 3\n\n(Shakespeare)"
    assert quoted.tags == "literature"
    assert parsed.skipped == [SkippedCard(number=6, line=9, reason="the answer is empty")]


def test_sample_quizlet() -> None:
    text = sample("sample_quizlet.txt")
    assert detect_format(text) == "quizlet"
    parsed = parse_deck(text)
    assert len(parsed.cards) == 5
    assert parsed.cards[1] == ParsedCard(
        front='"Carpe diem" means', back="seize the day", line=2, number=2, tags=""
    )
    assert parsed.cards[2].back == 'organelles that produce energy, "the powerhouse of the cell"'
    assert (parsed.cards[4].front, parsed.cards[4].line) == ("la mañana", 6)


def test_samples_parse_the_same_with_format_given() -> None:
    for name, fmt in (
        ("sample.csv", "csv"),
        ("sample.tsv", "tsv"),
        ("sample_anki.txt", "anki"),
        ("sample_quizlet.txt", "quizlet"),
    ):
        text = sample(name)
        assert parse_deck(text, format=fmt) == parse_deck(text), name


# CSV and TSV


def test_csv_without_header() -> None:
    parsed = parse_csv_text("a,b\nc,d,x y\n")
    assert [(c.front, c.back, c.tags, c.line) for c in parsed.cards] == [
        ("a", "b", "", 1),
        ("c", "d", "x y", 2),
    ]


def test_csv_header_maps_columns_by_name() -> None:
    parsed = parse_csv_text("Tags,BACK,front\nt1,the back,the front\n")
    assert parsed.cards == [ParsedCard("the front", "the back", 2, 1, "t1")]
    parsed = parse_csv_text("back,front\nB,F\n")
    assert (parsed.cards[0].front, parsed.cards[0].back) == ("F", "B")
    parsed = parse_csv_text(" Question , Answer \nq,a\n")
    assert (parsed.cards[0].front, parsed.cards[0].back, parsed.cards[0].number) == ("q", "a", 1)
    parsed = parse_tsv_text("term\tdefinition\nq\ta\n")
    assert parsed.cards[0].line == 2


def test_csv_header_with_a_missing_tags_cell_is_fine() -> None:
    parsed = parse_csv_text("front,back,tags\nq,a\nq2,a2,t\n")
    assert [c.tags for c in parsed.cards] == ["", "t"]


def test_csv_trailing_empty_cells_are_ignored() -> None:
    parsed = parse_csv_text("front,back,,\nq,a,,\nq2,a2\n")
    assert [(c.front, c.back) for c in parsed.cards] == [("q", "a"), ("q2", "a2")]
    parsed = parse_csv_text("q,a,t,,\n")
    assert parsed.cards[0].tags == "t"


def test_csv_tags_are_normalised() -> None:
    parsed = parse_csv_text('q,a,"  bio,  cells   cells  x::y "\n')
    assert parsed.cards[0].tags == "bio cells x::y"


def test_csv_spaces_after_commas_and_quoted_fields() -> None:
    parsed = parse_csv_text('q ,  "a, with comma",  tag\n')
    assert (parsed.cards[0].front, parsed.cards[0].back) == ("q", "a, with comma")


def test_csv_quotes_inside_an_unquoted_field_are_text() -> None:
    parsed = parse_csv_text('a 5" screen,big\n')
    assert parsed.cards[0].front == 'a 5" screen'


def test_csv_blank_and_empty_rows() -> None:
    parsed = parse_csv_text("front,back\n\n   \nq,a\n,\n, ,\nonly front,\n,only back\n")
    assert [c.line for c in parsed.cards] == [4]
    assert parsed.skipped == [
        SkippedCard(number=2, line=5, reason="question and answer are both empty"),
        SkippedCard(number=3, line=6, reason="question and answer are both empty"),
        SkippedCard(number=4, line=7, reason="the answer is empty"),
        SkippedCard(number=5, line=8, reason="the question is empty"),
    ]


def test_csv_line_numbers_count_physical_lines() -> None:
    text = 'front,back\n"one\n\ntwo",a\n"x","y\nz"\nlast,card\n'
    parsed = parse_csv_text(text)
    assert [(c.front, c.line) for c in parsed.cards] == [("one\n\ntwo", 2), ("x", 5), ("last", 7)]
    assert parsed.cards[1].back == "y\nz"


def test_csv_keeps_unicode_line_separators_as_text() -> None:
    parsed = parse_csv_text("a\u2028b,c\nd,e\n")
    assert [(c.front, c.line) for c in parsed.cards] == [("a\u2028b", 1), ("d", 2)]


def test_csv_crlf_and_bom() -> None:
    parsed = parse_csv_text('\ufefffront,back\r\n"a\r\nb",c\r\n')
    assert parsed.cards == [ParsedCard("a\nb", "c", 2, 1)]


def test_csv_row_with_four_columns_names_its_line() -> None:
    err = deck_error_for("front,back,tags\na,b,c\nd,e\n\nf,g,h,i\n", format="csv")
    assert err.line == 5
    assert str(err).startswith("Line 5: the row has 4 columns, more than the 3 of the header row")
    err = deck_error_for("a,b\nc,d\ne,f\ng,h\ni,j,k,l\n", format="csv")
    assert str(err) == (
        "Line 5: the row has 4 columns; expected 2 or 3 (front, back, tags). "
        "A field that contains a comma must be in double quotes"
    )


def test_csv_row_longer_than_a_two_column_header() -> None:
    err = deck_error_for("front,back\na,b,c\n", format="csv")
    assert err.line == 2
    assert "3 columns, more than the 2 of the header row (line 1)" in str(err)


def test_csv_row_with_one_column() -> None:
    err = deck_error_for("a,b\n\njust one\n", format="csv")
    assert str(err) == (
        "Line 3: the row has only one column: 'just one'; expected the front and the back "
        "separated by a comma"
    )
    err = deck_error_for("a\tb\nno tab here\n", format="tsv")
    assert err.line == 2
    assert "separated by a tab" in str(err)
    err = deck_error_for("tags,front,back\nt,f\n", format="csv")
    assert str(err) == "Line 2: the row has 2 columns; the header row (line 1) has 3"


def test_csv_unclosed_quote_names_the_line_it_starts_on() -> None:
    err = deck_error_for('a,b\nc,"d\ne,f\ng,h\n', format="csv")
    assert err.line == 2
    assert "never closed" in str(err)


def test_csv_text_after_a_closing_quote() -> None:
    err = deck_error_for('a,b\n"Hi" she said,back\n', format="csv")
    assert err.line == 2
    assert "more text after its closing double quote" in str(err)


def test_csv_bad_header() -> None:
    err = deck_error_for("front,back,notes\na,b,c\n", format="csv")
    assert str(err).startswith("Line 1: the header row has 'notes' for column 3")
    err = deck_error_for("front,back,front\na,b,c\n", format="csv")
    assert str(err) == "Line 1: the header row names the front column twice (columns 1 and 3)"
    err = deck_error_for("front,,back\na,b,c\n", format="csv")
    assert "a blank name for column 2" in str(err)


def test_csv_row_that_only_looks_like_part_of_a_header_is_a_card() -> None:
    parsed = parse_csv_text("front,something else\nq,a\n")
    assert [c.front for c in parsed.cards] == ["front", "q"]


def test_csv_without_cards() -> None:
    err = deck_error_for("front,back,tags\n\n", format="csv")
    assert str(err) == "Line 1: the file has no cards; it ends after the header"
    err = deck_error_for("\n\n", format="csv")
    assert str(err) == "Line 1: the file has no cards (it is empty)"
    err = deck_error_for("front,back\n,\n", format="csv")
    assert str(err).startswith("Line 2: the file has no cards with both a question and an answer")


def test_csv_field_and_tags_limits() -> None:
    ok = "q," + "y" * MAX_FIELD_CHARS + "\n"
    assert parse_csv_text(ok).cards
    err = deck_error_for("a,b\nq," + "y" * (MAX_FIELD_CHARS + 1) + "\n", format="csv")
    assert str(err) == "Line 2: the back of card 2 is 20,001 characters long; the limit is 20,000"
    err = deck_error_for("q,a," + " ".join(f"t{i}" for i in range(150)) + "\n", format="csv")
    assert err.line == 1
    assert "the tags of card 1 are 639 characters long; the limit is 500" in str(err)


def test_csv_field_beyond_the_csv_module_limit() -> None:
    err = deck_error_for('q,"' + "y" * 200_000 + '"\n', format="csv")
    assert str(err) == "Line 1: a field is longer than the limit of 20,000 characters"


def test_csv_control_character() -> None:
    err = deck_error_for("a,b\nc,d\x07\n", format="csv")
    assert err.line == 2
    assert "U+0007" in str(err)


def test_titles() -> None:
    assert parse_csv_text("a,b\n").title == "Imported deck"
    assert parse_csv_text("a,b\n", title="   ").title == "Imported deck"
    assert parse_csv_text("a,b\n", title="  My  deck ").title == "My deck"
    err = deck_error_for("a,b\n", format="csv", title="t" * 201)
    assert str(err) == "The title is 201 characters long; the limit is 200"
    # The seed format has a title of its own.
    assert parse_deck(deck(card(1, "a", "b")), title="Other").title == "My deck"


def test_tsv_commas_and_quoting() -> None:
    parsed = parse_tsv_text('one, two\t"three\tfour"\tx\n"a ""b"""\tc\n')
    assert [(c.front, c.back, c.tags) for c in parsed.cards] == [
        ("one, two", "three\tfour", "x"),
        ('a "b"', "c", ""),
    ]


def test_tsv_bad_row() -> None:
    err = deck_error_for("a\tb\nc\td\te\tf\n", format="tsv")
    assert err.line == 2
    assert "A field that contains a tab must be in double quotes" in str(err)


# Anki


def anki(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_anki_separators() -> None:
    for header, sep in (
        ("#separator:Comma", ","),
        ("#separator:semicolon", ";"),
        ("#separator:Pipe", "|"),
        ("#separator:Space", " "),
        ("#separator:Colon", ":"),
        ("#separator:tab", "\t"),
        ("#separator:;", ";"),
        ("#separator: ", " "),
    ):
        parsed = parse_anki_text(anki(header, f"front{sep}back", f'"a{sep}b"{sep}c'))
        assert [(c.front, c.back) for c in parsed.cards] == [("front", "back"), (f"a{sep}b", "c")]
        assert parsed.cards[0].line == 2


def test_anki_default_separator_is_tab() -> None:
    parsed = parse_anki_text(anki("#html:false", "a, b\tc"))
    assert (parsed.cards[0].front, parsed.cards[0].back) == ("a, b", "c")


def test_anki_html_false_keeps_the_text() -> None:
    parsed = parse_anki_text(anki("#separator:tab", "#html:false", "<b>x</b> &amp;\ty"))
    assert parsed.cards[0].front == "<b>x</b> &amp;"


def test_anki_html_is_turned_into_text() -> None:
    cases = {
        "line one<br>line two<br/>three<BR />four": "line one\nline two\nthree\nfour",
        "first<div>second</div><div>third</div>": "first\nsecond\nthird",
        "<p>para one</p><p>para two</p>": "para one\npara two",
        "<div>a</div><div><br></div><div><br></div><div>b</div>": "a\n\nb",
        '<a href="https://example.com">link</a> &lt;tag&gt; &quot;q&quot;': 'link <tag> "q"',
        "x&nbsp;&nbsp;y&nbsp;": "x  y",
        "1 < 2 and 3 > 2": "1 < 2 and 3 > 2",
        "<!-- note -->kept<img src='a.png'>": "kept",
        "caf&eacute; &#x1F600;": "café 😀",
    }
    for html_text, expected in cases.items():
        parsed = parse_anki_text(anki("#separator:tab", "#html:true", f"{html_text}\tback"))
        assert parsed.cards[0].front == expected, html_text


def test_anki_html_entity_for_a_control_character() -> None:
    err = deck_error_for(anki("#html:true", "a\tb", "form feed&#12;\tb"), format="anki")
    assert err.line == 3
    assert "U+000C" in str(err)
    # Entities for most control characters decode to nothing, and CR to a newline.
    parsed = parse_anki_text(anki("#html:true", "a&#7;b&#13;c\td"))
    assert parsed.cards[0].front == "ab\nc"


def test_anki_special_columns_are_not_fields() -> None:
    text = anki(
        "#separator:tab",
        "#html:true",
        "#guid column:1",
        "#notetype column:2",
        "#deck column:3",
        "#tags column:6",
        "#if matches:update current",
        "#some future header:whatever",
        "Fq8Kx\tBasic\tBiology::Cells\tthe front\tthe back\tbio  cells",
    )
    parsed = parse_anki_text(text)
    assert parsed.cards == [ParsedCard("the front", "the back", 9, 1, "bio cells")]


def test_anki_tags_column_may_be_missing_from_a_row() -> None:
    parsed = parse_anki_text(anki("#tags column:3", "a\tb", "c\td\tt"))
    assert [c.tags for c in parsed.cards] == ["", "t"]


def test_anki_tags_header_adds_tags_to_every_note() -> None:
    parsed = parse_anki_text(anki("#tags:imported  anki", "#tags column:3", "a\tb\tx anki"))
    assert parsed.cards[0].tags == "imported anki x"


def test_anki_extra_fields_are_added_to_the_back() -> None:
    parsed = parse_anki_text(anki("#html:true", "front\tback\textra <b>info</b>\t", "f\t\tonly"))
    assert parsed.cards[0].back == "back\n\nextra info"
    assert parsed.cards[1].back == "only"


def test_anki_columns_header_names_front_and_back() -> None:
    parsed = parse_anki_text(anki("#separator:tab", "#columns:Back\tFront\tTags", "b\tf\tt"))
    assert parsed.cards == [ParsedCard("f", "b", 3, 1, "t")]
    # Names it cannot place leave the fields in order.
    parsed = parse_anki_text(anki("#columns:Text\tExtra", "f\tb"))
    assert (parsed.cards[0].front, parsed.cards[0].back) == ("f", "b")


def test_anki_comment_lines_between_notes_are_skipped() -> None:
    parsed = parse_anki_text(anki("#separator:tab", "a\tb", "# a comment", 'c\t"d', '#e"'))
    assert [(c.front, c.back, c.line) for c in parsed.cards] == [("a", "b", 2), ("c", "d\n#e", 4)]


def test_anki_bad_tags_column() -> None:
    for value in ("x", "0", "-1", "", "2.5", "three"):
        text = anki("#separator:tab", "#html:true", f"#tags column:{value}", "a\tb\tc")
        err = deck_error_for(text, format="anki")
        assert err.line == 3, value
        assert str(err).startswith(
            "Line 3: the '#tags column:' header must be a column number (1, 2, 3, ...), not "
        ), value


def test_anki_bad_headers() -> None:
    err = deck_error_for(anki("#separator:Banana", "a\tb"), format="anki")
    assert str(err) == (
        "Line 1: the '#separator:' header must be Tab, Comma, Semicolon, Pipe, Space, Colon or "
        "a single character, not 'Banana'"
    )
    err = deck_error_for(anki("#separator:tab", "#html:yes", "a\tb"), format="anki")
    assert str(err) == "Line 2: the '#html:' header must be true or false, not 'yes'"
    err = deck_error_for(anki("#tags column:3", "#deck column:3", "a\tb\tc"), format="anki")
    assert str(err) == (
        "Line 2: the '#deck column:' header names column 3, which is already the tags column"
    )


def test_anki_note_with_one_field() -> None:
    err = deck_error_for(anki("#separator:tab", "a\tb", "", "lonely"), format="anki")
    assert str(err) == (
        "Line 4: the note has 1 field(s); expected at least a front and a back separated by tabs"
    )
    err = deck_error_for(anki("#separator:Pipe", "#tags column:2", "a|t"), format="anki")
    assert err.line == 3


def test_anki_without_notes() -> None:
    err = deck_error_for(anki("#separator:tab", "#html:true"), format="anki")
    assert str(err) == "Line 2: the file has no cards; it ends after the header"


# Quizlet


def test_quizlet_line_without_a_tab() -> None:
    err = deck_error_for("a\tb\n\nc\td\nno tab on this line\ne\tf\n", format="quizlet")
    assert str(err) == (
        "Line 4: the line has no tab: 'no tab on this line'; each line of a Quizlet export is "
        "a term, a tab, then the definition"
    )


def test_quizlet_takes_quotes_literally_and_splits_on_the_first_tab() -> None:
    parsed = parse_quizlet_text('"a\tb"\n"x""y\tz\tw\n')
    assert [(c.front, c.back) for c in parsed.cards] == [('"a', 'b"'), ('"x""y', "z\tw")]


def test_quizlet_empty_sides_are_skipped() -> None:
    parsed = parse_quizlet_text("a\tb\n \t \n\tb\nc\t\n")
    assert [s.reason for s in parsed.skipped] == [
        "the question is empty",
        "the answer is empty",
    ]


# Format detection


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (deck(card(1, "a", "b")), "seed"),
        ("\n\n  Title  \n1\nQ\nfront\nA\nback\n", "seed"),
        ("#separator:Comma\na,b\n", "anki"),
        ("#html:true\na\tb\n", "anki"),
        ("#Tags Column:3\na\tb\tc\n", "anki"),
        ("front,back\na,b\n", "csv"),
        ('"a\tb",c\n', "csv"),
        ('"a, b",c\n', "csv"),
        ("\n\na,b\n", "csv"),
        ("a\tb, c\n", "tsv"),
        ('"a,b"\tc\n', "tsv"),
        ("a\tb\nc\td\n", "tsv"),
        ('"complete"\tquoted\n', "tsv"),
        ('"Hi" she said\tback\nx\ty\n', "quizlet"),
        ('a\t"b\nc"\n', "tsv"),
        ("#hashtag,back\n", "csv"),
    ],
)
def test_detect_format(text: str, expected: str) -> None:
    assert detect_format(text) == expected


def test_detect_format_gives_up_clearly() -> None:
    with pytest.raises(DeckFormatError) as info:
        detect_format("\njust some words\nand more\n")
    assert info.value.line == 2
    assert str(info.value).startswith("Line 2: could not tell the file's format;")
    with pytest.raises(DeckFormatError) as info:
        parse_deck(" \n\n")
    assert str(info.value) == "Line 1: the file is empty"


def test_parse_deck_dispatches_and_rejects_unknown_formats() -> None:
    assert set(FORMATS) == {"seed", "csv", "tsv", "anki", "quizlet"}
    assert parse_deck("a\tb\n", format="quizlet").cards[0].front == "a"
    # Forcing a format reads the text that way even when detection would not.
    assert parse_deck("a,b\tc\n", format="csv").cards[0].back == "b\tc"
    with pytest.raises(DeckFormatError) as info:
        parse_deck("a,b\n", format="xlsx")
    assert info.value.line is None
    assert str(info.value) == (
        "Unknown deck format 'xlsx'; expected one of seed, csv, tsv, anki, quizlet"
    )


def test_parse_deck_reads_the_seed(seed_text: str) -> None:
    assert parse_deck(seed_text) == parse_seed_text(seed_text)


# render_csv


def test_render_csv() -> None:
    text = render_csv([("a,b", 'say "hi"', "t1  t2"), ("=SUM(A1)", "line\nbreak", "")])
    assert text == ('front,back,tags\r\n"a,b","say ""hi""",t1 t2\r\n=SUM(A1),"line\nbreak",\r\n')
    assert render_csv([]) == "front,back,tags\r\n"


def test_render_csv_drops_control_characters_and_normalises_newlines() -> None:
    text = render_csv([("a\x00b", "c\r\nd", "")])
    assert parse_deck(text).cards == [ParsedCard("ab", "c\nd", 2, 1)]


# Properties

_SPECIAL_TEXT = [",", '"', '""', "\n", "\n\n", "\t", "'", "😀", "👩‍🔬", "שלום", "مرحبا", "日本語"]
_csv_field = (
    st.lists(
        st.one_of(
            st.sampled_from(_SPECIAL_TEXT),
            st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12),
        ),
        min_size=1,
        max_size=6,
    )
    .map("".join)
    .map(lambda s: s.strip())
    .filter(bool)
)
_csv_front = st.one_of(_csv_field, st.tuples(st.sampled_from("=+-@"), _csv_field).map("".join))
_tag = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters=","),
    min_size=1,
    max_size=10,
).filter(lambda t: t.split() == [t])
_tags = st.lists(_tag, max_size=4, unique=True).map(" ".join)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cards=st.lists(st.tuples(_csv_front, _csv_field, _tags), min_size=1, max_size=8))
def test_render_csv_then_parse_round_trips(cards: list[tuple[str, str, str]]) -> None:
    text = render_csv(cards)
    for fmt in ("csv", None):
        parsed = parse_deck(text, format=fmt)
        assert [(c.front, c.back, c.tags) for c in parsed.cards] == cards
        assert [c.number for c in parsed.cards] == list(range(1, len(cards) + 1))
        assert parsed.skipped == []
    # As an upload: UTF-8 with a byte-order mark, as Excel saves it.
    uploaded = decode_upload(b"\xef\xbb\xbf" + text.encode())
    assert [(c.front, c.back, c.tags) for c in parse_deck(uploaded).cards] == cards


@settings(deadline=None)
@given(
    text=st.lists(
        st.one_of(
            st.sampled_from([",", "\t", '"', "\n", "#", "<br>", "&amp;", "#html:true\n"]),
            st.text(max_size=5),
        ),
        max_size=60,
    ).map("".join),
    fmt=st.sampled_from([None, *FORMATS]),
)
def test_arbitrary_text_fails_only_with_deck_format_error(text: str, fmt: str | None) -> None:
    try:
        parsed = parse_deck(text, format=fmt)
    except DeckFormatError as err:
        assert err.message
        assert err.line is None or err.line >= 1
    else:
        assert parsed.cards
        assert all(c.front and c.back for c in parsed.cards)
