"""LLM client layer: one configured client per role (explainer, simulator, embedder) over any
OpenAI-compatible endpoint, with a persistent content-addressed cache, retries, limits and a usage ledger."""

from autointerp.llm.cache import ResponseCache, cache_key, canonical_json
from autointerp.llm.client import (
    ChatResult,
    EchoLogprobsResult,
    EmbedResult,
    EndpointError,
    LLMClient,
    LLMError,
    LLMRequestError,
    LLMResult,
    MalformedResponseError,
    RatePacer,
    Usage,
    estimate_tokens,
    is_retryable,
    make_clients,
    redact,
    run_many,
)
from autointerp.llm.config import LLMConfigError, RoleConfig, normalise_base_url
from autointerp.llm.ledger import Ledger, UsageRecord, estimate_cost
from autointerp.common.progress import Progress

__all__ = [
    "ChatResult", "EchoLogprobsResult", "EmbedResult", "EndpointError", "LLMClient", "LLMConfigError", "LLMError",
    "LLMRequestError", "LLMResult", "Ledger", "MalformedResponseError", "Progress", "RatePacer", "ResponseCache",
    "RoleConfig", "Usage", "UsageRecord", "cache_key", "canonical_json", "estimate_cost", "estimate_tokens",
    "is_retryable", "make_clients", "normalise_base_url", "redact", "run_many",
]
