"""Per-role LLM configuration (one plain dict per role in the Snakemake config)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROVIDERS = ("openai", "local")
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Servers on loopback (llama.cpp, vLLM, Ollama, the embedded engine) ignore the key, but the SDK insists on one.
DUMMY_API_KEY = "sk-no-key-required"


class LLMConfigError(ValueError):
    """A role's configuration is invalid or its API key is missing."""


@dataclass(frozen=True)
class RoleConfig:
    role: str
    model: str
    provider: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None  # name of the env var, never the key itself
    context_length: int | None = None  # informational, for prompt builders
    encoding: str | None = None  # informational (tokenizer name), for prompt builders
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0
    concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    cache_dir: str | None = ".cache/llm"  # None disables the response cache
    cache_endpoint: str | None = None  # overrides the endpoint identity used in cache keys
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for other layers

    @classmethod
    def from_dict(cls, role: str, d: dict[str, Any]) -> "RoleConfig":
        if not isinstance(d, dict):
            raise LLMConfigError(f"llm config for role {role!r} must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"role", "extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if not known.get("model"):
            raise LLMConfigError(f"llm config for role {role!r} needs 'model'")
        provider = known.get("provider", "openai")
        if provider not in PROVIDERS:
            raise LLMConfigError(f"role {role!r}: provider must be one of {PROVIDERS}, got {provider!r}")
        if provider == "openai":
            known.setdefault("base_url", OPENAI_DEFAULT_BASE_URL)
            known.setdefault("api_key_env", "OPENAI_API_KEY")
        elif not known.get("base_url"):
            # The embedded engine is an OpenAI-compatible server; the workflow fills in its URL once it is up.
            raise LLMConfigError(f"role {role!r}: provider 'local' needs 'base_url' of the running engine")
        for k in ("concurrency", "max_retries"):
            if k in known:
                known[k] = int(known[k])
        cfg = cls(role=role, extra=extra, **known)
        if cfg.concurrency < 1 or cfg.max_retries < 0 or cfg.timeout_s <= 0:
            raise LLMConfigError(f"role {role!r}: need concurrency >= 1, max_retries >= 0, timeout_s > 0")
        for k in ("requests_per_minute", "tokens_per_minute"):
            v = getattr(cfg, k)
            if v is not None and v <= 0:
                raise LLMConfigError(f"role {role!r}: {k} must be positive or null")
        return cfg

    @property
    def is_loopback(self) -> bool:
        host = urlsplit(self.base_url or "").hostname or ""
        return self.provider == "local" or host in LOOPBACK_HOSTS

    @property
    def endpoint_id(self) -> str:
        """Identity of the endpoint in cache keys: what determines the answer, not where it happens to listen."""
        if self.cache_endpoint:
            return self.cache_endpoint
        if self.provider == "local":
            # The embedded engine listens on an ephemeral port; the model name identifies it.
            return "local"
        return f"{self.provider}|{normalise_base_url(self.base_url or OPENAI_DEFAULT_BASE_URL)}"

    def resolve_api_key(self) -> str:
        """Read the key from the named env var; loopback servers get a dummy key when none is set.

        The error names the variable and how to set it, never its value.
        """
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key and key.strip():
            return key
        if self.is_loopback:
            return DUMMY_API_KEY
        where = f"role {self.role!r} (model {self.model!r}, endpoint {self.base_url})"
        if not self.api_key_env:
            raise LLMConfigError(
                f"{where} needs an API key but its api_key_env is null: set api_key_env to the name of the "
                "environment variable that holds the key (e.g. api_key_env: OPENAI_API_KEY) and export that variable"
            )
        state = "is not set" if self.api_key_env not in os.environ else "is set but empty"
        raise LLMConfigError(
            f"{where}: API key environment variable {self.api_key_env} {state}; export it before running "
            f"(export {self.api_key_env}=<your key>, e.g. in your shell or a sourced .env file), or change "
            "api_key_env in this model's config to a variable that holds the key"
        )


def normalise_base_url(url: str) -> str:
    """Lower-case scheme/host, drop default ports, trailing slashes, query and fragment."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))
