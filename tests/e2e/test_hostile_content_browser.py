"""Hostile card content in the real browser: nothing runs, the CSP blocks nothing of ours."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from decks.models import Card, Deck
from tests.test_security import XSS_PAYLOADS


def test_xss_payloads_stay_inert_in_the_browser(student_page: Page, live_server, browser_errors):
    deck = Deck.objects.create(title=XSS_PAYLOADS[2], description=XSS_PAYLOADS[0], is_public=True)
    Card.objects.bulk_create(
        Card(deck=deck, front=payload, back=payload, position=i)
        for i, payload in enumerate(XSS_PAYLOADS[:12], start=1)
    )
    dialogs: list[str] = []
    student_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for path in ["/", f"/decks/{deck.pk}/", f"/decks/{deck.pk}/study/"]:
        student_page.goto(f"{live_server.url}{path}")
        student_page.wait_for_load_state("networkidle")
    # Flip and rate through a few hostile cards with the keyboard: htmx swaps them in too.
    for _ in range(4):
        student_page.keyboard.press("Space")
        expect(student_page.get_by_role("button", name="1 Not at all")).to_be_focused()
        student_page.keyboard.press("5")
        expect(student_page.locator("#show-answer, .done h2").first).to_be_focused()
    assert dialogs == []
    browser_errors.assert_none()
