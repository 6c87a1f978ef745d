import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # loopback_server importable under any --import-mode
from loopback_server import LoopbackServer  # noqa: E402


# -- No silent skips in CI ---------------------------------------------------------------------------------------
# Tests that need ../shared, Chromium or an embedded wheel may skip on a user's machine; under CI (CI=true) a skip
# means the environment is missing something the suite must cover, so every skip (test-time or collection-time,
# e.g. pytest.importorskip at module level) is reported as a failure. Expected failures (xfail) are not skips.

def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report) -> None:
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and _under_ci() and not hasattr(report, "wasxfail"):
        _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped and _under_ci():
        _fail_skip(report)
    return report


@pytest.fixture
def loopback():
    """A fresh OpenAI-compatible loopback server per test."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def make_client(loopback, tmp_path):
    """make_client(role="explainer", **config_overrides) -> LLMClient against `loopback`, cache in tmp_path.
    Backoff is shortened so retry tests stay fast."""
    from autointerp.llm import LLMClient

    def make(role="explainer", **overrides):
        cfg = {"provider": "openai", "model": "loop-model", "base_url": loopback.base_url, "api_key_env": None,
               "cache_dir": str(tmp_path / "cache"), "backoff_initial_s": 0.01, "backoff_max_s": 0.05}
        cfg.update(overrides)
        return LLMClient.from_config(role, cfg)

    return make


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2 prepared once per test session (dequantising takes ~18 s)."""
    from autointerp.extract.subject_models import prepare_model

    out = tmp_path_factory.mktemp("models") / "smollm2"
    prepare_model("embedded:smollm2-135m-instruct", out)
    return out


# -- A real browser: Debian's chromium + chromium-driver (make browser-packages), driven by Selenium ----------------
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    if not os.path.exists(CHROMEDRIVER):
        return "chromedriver is missing (apt-get install chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    return None


@pytest.fixture
def browser(tmp_path):
    if reason := _browser_missing():
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,2200", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start here is an environment problem
        pytest.skip(f"headless Chromium did not start: {exc!r}"[:300])
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(5)  # finding an element waits for it (the 2-core CI machine is shared)
    try:
        yield driver
    finally:
        driver.quit()
