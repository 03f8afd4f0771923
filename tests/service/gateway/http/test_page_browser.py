"""Issue 9.5: the page at `/` in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The gateway runs in a thread over the fake upstream. The test uploads a PNG and a text file through the page's
file input, then reads the page as a person would: the PNG's best label and its bars, the text file's error as the
API words it, and that every resource the page loaded came from the gateway (no CDN). Screenshots go to the test's
output folder (pytest's tmp_path, printed), and also to $TLSERVE_SCREENSHOT_DIR when set (docs/img/page.png is one).
Chromium and chromedriver come from scripts/install-tools.sh (run by `make test`); selenium from requirements/dev.txt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.gateway.server import GatewayPorts, serve
from tests.conftest import random_images
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer, image_label

pytestmark = pytest.mark.slow
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "run scripts/install-tools.sh as root (Debian packages chromium and chromium-driver)"
WAIT_S = 30


@contextlib.contextmanager
def gateway_in_thread(**overrides: object) -> Iterator[str]:
    """The whole gateway (HTTP + gRPC) over a fake upstream, in a thread; yields its HTTP base URL."""
    started = threading.Event()
    state: dict[str, object] = {}

    def run() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            state["stop"], state["loop"] = stop, asyncio.get_running_loop()

            def on_ready(ports: GatewayPorts) -> None:
                state["ports"] = ports
                started.set()

            settings = make_settings(http_host="127.0.0.1", **overrides)
            await serve(settings, stop=stop, on_ready=on_ready, backend=FakeModelServer())

        try:
            asyncio.run(main())
        finally:
            started.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    assert started.wait(60), "the gateway did not start"
    ports = state.get("ports")
    assert isinstance(ports, GatewayPorts), "the gateway failed to start"
    try:
        yield f"http://127.0.0.1:{ports.http_port}"
    finally:
        loop = state["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[union-attr]
        thread.join(60)


def browser_binaries() -> tuple[str, str]:
    chromium = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(f"chromium and chromedriver are needed for the page test: {INSTALL_HINT}")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is pinned in requirements/dev.txt")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,760"):
        options.add_argument(argument)
    # Point Selenium at Debian's driver: Selenium Manager would otherwise try to download one.
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(WAIT_S)
    yield session
    session.quit()


def screenshot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    target = os.environ.get("TLSERVE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    print(f"screenshot: {path}")
    return path


def wait_for_cards(browser, count: int) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(driver):
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card[data-state]")
        return cards if len(cards) >= count else False

    return WebDriverWait(browser, WAIT_S).until(settled)


def test_page_classifies_an_upload_and_explains_a_non_image(browser, tmp_path):
    from selenium.webdriver.common.by import By

    image = random_images(1, seed=3)[0]
    (tmp_path / "photo.png").write_bytes(image)
    (tmp_path / "notes.txt").write_text("this is not an image\n")
    with gateway_in_thread() as url:
        browser.get(url + "/")
        assert browser.title == "tlserve — try a prediction"
        upload = browser.find_element(By.ID, "files")
        upload.send_keys(f"{tmp_path / 'photo.png'}\n{tmp_path / 'notes.txt'}")
        cards = {card.get_attribute("data-file"): card for card in wait_for_cards(browser, 2)}
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);"
        )
        shot = screenshot(browser, tmp_path, "page")

    photo, notes = cards["photo.png"], cards["notes.txt"]
    assert photo.get_attribute("data-state") == "ok"
    assert photo.find_element(By.CLASS_NAME, "best").text == image_label(image)
    bars = photo.find_elements(By.CSS_SELECTOR, ".row .bar")
    assert len(bars) == 3
    widths = [bar.value_of_css_property("width") for bar in bars]
    assert all(float(width.removesuffix("px")) > 0 for width in widths), widths
    scores = [row.text for row in photo.find_elements(By.CLASS_NAME, "score")]
    assert scores == ["70.0%", "20.0%", "10.0%"]
    meta = photo.find_element(By.CLASS_NAME, "meta").text
    assert meta.startswith("demo v2 · ")
    assert meta.endswith(" ms")

    assert notes.get_attribute("data-state") == "error"
    error = notes.find_element(By.CLASS_NAME, "error")
    assert error.text == "invalid_image: image 0 (notes.txt) is not a recognisable image file"
    assert notes.find_element(By.CLASS_NAME, "meta").text.startswith("HTTP 400")

    assert all(resource.startswith(url) for resource in resources), resources  # nothing from a CDN
    assert shot.stat().st_size > 1000


def test_page_sends_the_api_key_and_shows_the_401_words(browser, tmp_path):
    from selenium.webdriver.common.by import By

    (tmp_path / "a.png").write_bytes(random_images(1)[0])
    with gateway_in_thread(api_keys="s3cret") as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "a.png"))
        (refused,) = wait_for_cards(browser, 1)
        assert refused.get_attribute("data-state") == "error"
        assert refused.find_element(By.CLASS_NAME, "error").text.startswith("unauthenticated: a valid API key")
        browser.find_element(By.ID, "api_key").send_keys("s3cret")
        browser.find_element(By.ID, "top_k").send_keys("1")
        browser.find_element(By.ID, "files").send_keys(str(tmp_path / "a.png"))
        cards = wait_for_cards(browser, 2)
        screenshot(browser, tmp_path, "page-api-key")
    answered = cards[0]  # newest first
    assert answered.get_attribute("data-state") == "ok"
    assert len(answered.find_elements(By.CSS_SELECTOR, ".row .bar")) == 1
