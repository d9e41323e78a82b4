"""The web page in a real headless browser (Debian's chromium driven by Playwright).

Type a prompt, click Generate, wait for the final image, and check it is a decodable image of
the model's size; partial images must have been shown before it. Skipped only when chromium is
absent (CI installs it); Playwright never downloads a browser here.
"""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not shutil.which("chromium"):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from test_server import one_torch_thread, shared_pipeline  # noqa: E402, F401

from simplear.server.app import ServerConfig, create_app  # noqa: E402
from simplear.server.run import background_server  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return shared_pipeline(tmp_path_factory)


def test_page_generates_an_image(pipe):
    size = int(pipe.config.image_size)
    app = create_app(pipe, ServerConfig(model_id="tiny"))
    with background_server(app) as base_url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base_url + "/")
            page.wait_for_selector("#size option", state="attached")  # the model's settings have loaded
            page.fill("#prompt", "a photo of two red circles")
            page.click("summary")
            page.fill("#seed", "3")
            page.click("#generate")
            page.wait_for_selector("img.final", timeout=60_000)
            img = page.locator("img.final").first
            natural = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
            assert natural == [size, size]
            src = img.get_attribute("src")
            assert src.startswith("data:image/png;base64,")
            decoded = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert decoded.size == (size, size)
            link = page.locator("figcaption a")
            assert link.get_attribute("download") == "simplear-3.png"
            # The rows sampled so far were shown before the final image (one per checkpoint row).
            assert int(img.get_attribute("data-partials")) == size // pipe.visual_tokenizer.downsample - 1
            assert "Done" in page.text_content("#status")
            assert not errors, errors
        finally:
            browser.close()


def test_page_asks_for_the_api_key_and_shows_the_server_error(pipe):
    app = create_app(pipe, ServerConfig(model_id="tiny", max_prompt_chars=10, api_key="page-key-123"))
    with background_server(app) as base_url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(base_url + "/")
            page.wait_for_selector("#keybox:not([hidden])")  # /v1/models answered 401
            page.fill("#apikey", "page-key-123")
            page.click("#keybox button")
            page.wait_for_selector("#size option", state="attached")
            assert page.is_hidden("#keybox")
            # The textarea's maxlength stops typing; set the value directly to reach the server.
            page.evaluate("document.getElementById('prompt').value = 'x'.repeat(50)")
            page.click("#generate")
            page.wait_for_selector("#status.error")
            assert "limit is 10" in page.text_content("#status")
        finally:
            browser.close()
