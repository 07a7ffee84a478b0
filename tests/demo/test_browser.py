"""The web demo in a real browser: Debian's Chromium driven by Playwright, the tiny model.

Needs ``apt-get install chromium`` and ``pip install playwright`` (Playwright's own browser
download is not used); the tests are skipped, saying so, when either is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from groundinggpt.demo import launch

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sync_playwright():
    """Playwright's sync API, or a skip that says what to install."""
    pytest.importorskip("gradio", reason="the web demo needs gradio: pip install -e '.[demo]'")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser test needs Playwright: pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser test needs Chromium at {CHROMIUM}: apt-get install chromium")
    return sync_playwright


@pytest.fixture(scope="module")
def server(sync_playwright, demo_cfg):
    """``demo.py``'s app (`launch`) on a free localhost port, served from a background thread."""
    cfg = demo_cfg.copy()
    cfg.server_port = _free_port()
    app = launch(cfg, block=False)
    yield app.local_url
    app.close()


@pytest.fixture(scope="module")
def browser(sync_playwright):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#image-file input[type=file]").wait_for(state="attached")
    yield page
    page.close()


def test_ask_about_an_image(page, synthetic_image, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "photo.png"  # a name of our own, to find it in the page
    shutil.copy(synthetic_image, upload)
    page.locator("#image-file input[type=file]").set_input_files(str(upload))
    expect(page.locator("#status")).to_contain_text("Loaded image photo.png")
    page.locator("#question textarea").fill("Where is the blue triangle?")
    page.locator("#ask").click()
    expect(page.locator("#answer textarea")).to_have_value(re.compile(r"^answer: "))
    expect(page.locator("#chatbot")).to_contain_text("Where is the blue triangle?")
    picture = page.locator("#picture img")
    expect(picture).to_be_visible()
    assert page.evaluate("(img) => img.naturalWidth", picture.element_handle()) > 0
    expect(page.locator("#status")).to_contain_text("Turn 1.")
    expect(page.get_by_text("rec_test_00000.png")).to_be_visible()  # the synthetic examples


def test_broken_file_shows_a_clear_message(page, broken_image):
    from playwright.sync_api import expect

    page.locator("#image-file input[type=file]").set_input_files(str(broken_image))
    message = "Could not read the image file broken.png"
    expect(page.locator("#status")).to_contain_text(message)
    expect(page.get_by_text(re.compile("Traceback"))).to_have_count(0)
