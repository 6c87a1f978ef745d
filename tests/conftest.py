import os
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
