"""Typed role entries of the config (explainers, simulators, embedders): the endpoint part every role shares,
plus what each kind of role adds. Field sets mirror config/config.schema.yaml, whose defaults fill them."""

from __future__ import annotations

from typing import Any, Literal

from autointerp.common.settings import Settings


class Endpoint(Settings):
    """Where and how to call a model: the client settings (autointerp.llm.RoleConfig) of any role."""

    provider: Literal["local", "openai"]
    model: str
    base_url: str | None = None  # optional: OpenAI's URL for provider openai, the engine's own for local
    api_key_env: str | None  # the variable's name, never the key
    context_length: int
    encoding: Literal["cl100k_base", "o200k_base"]
    price_input_per_1m: float
    price_output_per_1m: float
    concurrency: int
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout_s: float
    max_retries: int

    def client_config(self) -> dict[str, Any]:
        """The keys RoleConfig takes (prompt-building keys context_length/encoding are informational there)."""
        data = self.model_dump(include=set(Endpoint.model_fields))
        # Unset optional keys are left to RoleConfig's provider defaults; api_key_env None means "no key".
        return {k: v for k, v in data.items() if v is not None or k == "api_key_env"}


class ExplainerRole(Endpoint):
    role: Literal["compared", "reference"]
    formats: list[str] | None = None  # None: every configured prompt format
    temperature: float
    top_p: float
    max_tokens: int
    samples: int
    seed: int | None  # sample i is drawn with seed + i (extra samples get indices after the regular ones)


class SimulatorRole(Endpoint):
    mode: Literal["prompt_logprobs", "chat_logprobs"]
    top_logprobs: int
    seed: int | None  # chat_logprobs only (greedy at temperature 0; the seed pins what an API may still vary)


class EmbedderRole(Endpoint):
    model_dir: str | None = None  # provider local: a sentence-transformers folder instead of the wheel's


class ScorerRole(Endpoint):
    """A classification scorer (autointerp.classify): a chat model answering yes/no about held-out excerpts."""

    kinds: list[Literal["detection", "fuzzing"]]
    neuron_sets: list[str] | None = None  # None: every neuron set
    seed: int  # request seed (greedy decoding) and fuzzing's wrong-mark draws
