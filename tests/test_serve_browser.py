"""The playground in a real browser: Selenium drives Debian's Chromium (headless) through its ChromeDriver
against a real server. It draws a 7 with pointer actions and waits for the answer, points at a hidden
unit, opens a confusion-matrix cell, and trains a 2-epoch run from the form and sees it finish and join
the model picker. With MNIST_NN_SCREENSHOT=docs/playground.png it saves the screenshot the README shows
(by default into the test's temporary folder, so that a test run changes no tracked file)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import TinyMnist
from mnist_nn.settings import Settings
from test_serve import Server, need_extra, tiny_cache, tiny_data

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = os.environ.get("MNIST_NN_SCREENSHOT")
WAIT_S = 120  # how long a step may take before the test gives up (a guard, not a timing)
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900")


def browser_paths() -> tuple[str, str]:
    found = [shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
             for name in ("chromium", "chromedriver")]
    if None in found:
        message = ("needs Chromium and its ChromeDriver: apt-get install chromium chromium-driver "
                   "(and pip install \".[serve]\" for selenium)")
        if os.environ.get("MNIST_NN_REQUIRE_EXTRAS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found[0], found[1]


@pytest.fixture
def browser(tmp_path):
    need_extra("starlette", "uvicorn", "selenium")
    chromium, chromedriver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # ends chromedriver and Chromium, pass or fail


@pytest.fixture
def playground(tmp_path):
    need_extra("starlette", "uvicorn")
    from mnist_nn import fit

    tiny = TinyMnist(n_train=500, n_test=200)
    cache = tiny_cache(tmp_path / "cache", tiny)
    fit(Settings(epochs=2, hidden=(16,), validation_size=100), tiny_data(tiny), out=tmp_path / "runs" / "tiny-run")
    server = Server(tmp_path / "runs", cache)
    try:
        yield server
    finally:
        server.close()


def save_small_screenshot(driver, path: Path) -> None:
    """The page as a 256-colour PNG: a tenth of the size, and still sharp for a README."""
    from PIL import Image

    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(colors=256).save(path, optimize=True)


def test_draw_look_inside_and_train_in_a_real_browser(browser, playground, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def testid(name):
        return browser.find_element(By.CSS_SELECTOR, f"[data-testid={name}]")

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(playground.url)
    wait.until(lambda _: testid("model-select").get_attribute("data-count") == "1")
    assert testid("model-select").get_attribute("value") == "tiny-run"

    canvas = testid("draw-canvas")
    strokes = ActionChains(browser).move_to_element_with_offset(canvas, -70, -90).click_and_hold()
    for x, y in ((0, -90), (70, -90), (35, -20), (5, 50), (-10, 100)):  # a 7, offsets from the centre
        strokes.move_to_element_with_offset(canvas, x, y)
    strokes.release().perform()
    wait.until(lambda _: testid("prediction").text.isdigit())
    wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hidden .unit")) == 16
    print(f"drawing to answer: {canvas.get_attribute('data-roundtrip-ms')} ms")

    ActionChains(browser).move_to_element(browser.find_elements(By.CSS_SELECTOR, "#hidden .unit")[3]).perform()
    wait.until(lambda _: browser.find_element(By.ID, "unit-note").text.startswith("unit 3 "))
    screenshot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "playground.png"
    save_small_screenshot(browser, screenshot)
    assert screenshot.stat().st_size > 1000

    testid("clear").click()
    assert testid("prediction").text == "?"

    browser.find_element(By.CSS_SELECTOR, ".tab[data-tab=explore]").click()
    wait.until(lambda _: browser.find_element(By.ID, "accuracy").text.endswith("%"))
    browser.find_elements(By.CSS_SELECTOR, "#confusion td")[0].click()  # true 0, predicted 0
    wait.until(lambda _: "test images of 0 predicted as 0" in browser.find_element(By.ID, "cell-title").text)

    browser.find_element(By.CSS_SELECTOR, ".tab[data-tab=train]").click()
    wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "[data-testid=setting-epochs]"))
    for name, value in (("epochs", "2"), ("hidden", "16"), ("validation_size", "100")):
        box = testid(f"setting-{name}")
        box.clear()
        box.send_keys(value)
    testid("train-start").click()
    wait.until(lambda _: testid("train-status").text in ("done", "stopped") or testid("train-status").text.startswith("error"))
    assert testid("train-status").text == "done", browser.find_element(By.ID, "train-lines").text
    assert "Epoch 2/2  test" in browser.find_element(By.ID, "train-lines").text
    wait.until(lambda _: testid("model-select").get_attribute("data-count") == "2")
    assert testid("model-select").get_attribute("value") != "tiny-run"  # the new run is chosen
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []
