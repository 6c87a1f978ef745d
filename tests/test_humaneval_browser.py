"""End-to-end: a person rates a small study in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium; the ``browser`` fixture in conftest.py). Skips cleanly where the browser, its driver or
Selenium is missing."""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_humaneval import FORMATS, NEURONS, write_inputs  # noqa: E402

SCREENSHOT_ENV = "HUMANEVAL_SCREENSHOT"  # set it to keep the screenshot somewhere to look at


@pytest.fixture
def served_study(tmp_path):
    from autointerp.human_eval import prepare_study
    from autointerp.human_eval.web import make_http_server

    records, files = write_inputs(tmp_path)
    db = tmp_path / "study.sqlite"
    prepare_study(records, files, db, explainer="gpt-browser", study_name="browser", seed=11)
    server = make_http_server(db, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield db, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _click_and_wait(driver, element):
    """Click something that submits a form (None: reload); wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click() if element is not None else driver.refresh()

    def replaced(_driver):
        # Chromium reports a replaced document either as a stale element or, since ~v150, as an inspector
        # error ("Node with given id does not belong to the document"): both mean the old page is gone.
        try:
            page.is_enabled()
            return False
        except WebDriverException:
            return True

    wait = WebDriverWait(driver, 20)
    wait.until(replaced)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def _assert_blind(driver):
    source = driver.page_source.lower() + driver.current_url.lower()
    for fmt in FORMATS:
        for needle in (fmt, fmt[3:]):
            assert needle.lower() not in source, needle


def test_rate_two_neurons_in_chromium(browser, served_study, tmp_path):
    screenshot = Path(os.environ.get(SCREENSHOT_ENV, tmp_path / "humaneval.png"))
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from autointerp.human_eval import table5

    db, base = served_study
    driver = browser
    driver.get(base + "/")
    _assert_blind(driver)
    name = driver.find_element(By.ID, "name")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=name]").text.startswith("Your name")
    name.send_keys("Browser Rater")
    _click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert driver.current_url == base + "/rate"
    cookie = next(c for c in driver.get_cookies() if c["name"] == "hev_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    clicked: dict[str, int] = {}  # displayed explanation text -> score clicked
    chosen_best: list[str] = []
    for page_no in (1, 2):
        assert f"Neuron {page_no} of 2" in driver.find_element(By.TAG_NAME, "h1").text
        _assert_blind(driver)
        texts = [q.text for q in driver.find_elements(By.CSS_SELECTOR, "fieldset.statement legend q")]
        assert len(texts) == len(FORMATS)
        _click_and_wait(driver, None)  # reload: the order is stable across reloads
        assert [q.text for q in driver.find_elements(By.CSS_SELECTOR, "fieldset.statement legend q")] == texts

        # activations are readable without colour: strong tokens bold + underlined with their value shown
        strong = driver.find_elements(By.CSS_SELECTOR, ".excerpt .hi")
        assert strong and strong[0].value_of_css_property("font-weight") in ("700", "bold")
        assert "underline" in strong[0].value_of_css_property("text-decoration-line")
        assert strong[0].find_element(By.CSS_SELECTOR, ".v").is_displayed()
        assert strong[0].get_attribute("title").startswith("activation ")
        weak_value = driver.find_element(By.CSS_SELECTOR, ".excerpt .v.lo")
        assert not weak_value.is_displayed()

        if page_no == 1:
            # submitting with nothing answered is stopped by the browser (required radios): nothing stored
            driver.find_element(By.CSS_SELECTOR, "button.primary").click()
            assert "Neuron 1 of 2" in driver.find_element(By.TAG_NAME, "h1").text
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0
            driver.find_element(By.CSS_SELECTOR, "label[for=allvalues]").click()
            assert weak_value.is_displayed()
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(screenshot))

        for i, fieldset in enumerate(driver.find_elements(By.CSS_SELECTOR, "fieldset.statement")):
            score = (i + page_no) % 5 + 1
            labels = fieldset.find_elements(By.TAG_NAME, "label")
            assert [lab.text.split("·")[1].strip() for lab in labels] == [
                "Strongly Disagree", "Disagree", "Neither agree nor disagree", "Agree", "Strongly Agree"]
            labels[score - 1].click()
            assert labels[score - 1].find_element(By.TAG_NAME, "input").is_selected()
            clicked[texts[i]] = score
        best_labels = driver.find_elements(By.CSS_SELECTOR, "fieldset.best label")
        if page_no == 1:
            best_labels[2].click()
            best_index = 2
        else:  # by keyboard: focus the first option, select it, move with the arrow key
            first = best_labels[0].find_element(By.TAG_NAME, "input")
            first.send_keys(Keys.SPACE)
            first.send_keys(Keys.ARROW_DOWN)
            best_index = 1
            assert driver.switch_to.active_element == best_labels[1].find_element(By.TAG_NAME, "input")
        assert best_labels[best_index].find_element(By.TAG_NAME, "input").is_selected()
        chosen_best.append(texts[best_index])
        _click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "button.primary"))

    assert "You have rated all 2 neurons" in driver.find_element(By.TAG_NAME, "main").text
    _assert_blind(driver)

    # the database holds exactly what was clicked, keyed by the hidden format
    with sqlite3.connect(db) as conn:
        stored = {text: score for text, score in conn.execute(
            "SELECT e.text, r.score FROM ratings r JOIN explanations e ON e.id = r.explanation_id "
            "JOIN raters ra ON ra.id = r.rater_id WHERE ra.name = 'Browser Rater'")}
        best = sorted(t for (t,) in conn.execute(
            "SELECT e.text FROM best_choices b JOIN explanations e ON e.id = b.explanation_id"))
        fmt_of = dict(conn.execute("SELECT text, format FROM explanations"))
    assert stored == clicked and best == sorted(chosen_best)
    assert len(stored) == len(NEURONS) * len(FORMATS)

    rows = {r["format"]: r for r in table5([db], tmp_path / "table5.csv")}
    for fmt in FORMATS:
        scores = [s for t, s in clicked.items() if fmt_of[t] == fmt]
        mean = sum(scores) / 2
        sem = math.sqrt(sum((s - mean) ** 2 for s in scores) / 1 / 2)
        assert rows[fmt]["mean"] == pytest.approx(mean) and rows[fmt]["sem"] == pytest.approx(sem)
        assert rows[fmt]["pct_best"] == pytest.approx(50.0 * sum(fmt_of[t] == fmt for t in chosen_best))
    assert screenshot.stat().st_size > 10_000

    # stop and resume: signing out, then the same name on a fresh session shows the thank-you page again
    _click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form.stop button"))
    assert "Your answers are saved" in driver.find_element(By.TAG_NAME, "main").text
    driver.find_element(By.ID, "name").send_keys("browser rater")
    _click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "You have rated all 2 neurons" in driver.find_element(By.TAG_NAME, "main").text
