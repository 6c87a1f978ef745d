import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # loopback_server importable under any --import-mode
from loopback_server import LoopbackServer  # noqa: E402


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
