"""The tables stage's settings: which names are prompt formats (ranked) and which are comparison methods (never
ranked), the statistics of the paired comparisons, and the roles and budget of the cost estimate.

Every part is optional so that a rule sends only the parts it reads (``to_params("formats", ...)``): editing an
explainer's price reruns the cost estimate, not Table 2. A job that needs a part it was not sent fails with
one clear line (``need``). Defaults live in config/config.schema.yaml (``tables``).
"""

from __future__ import annotations

from typing import Any

from autointerp.common.settings import Settings
from autointerp.llm.settings import EmbedderRole, ExplainerRole, ScorerRole, SimulatorRole


class Statistics(Settings):
    """config ``tables``: the paired comparisons' bootstrap and the small-n warning."""

    n_boot: int  # bootstrap resamples of the units (neurons, puzzles)
    seed: int  # numpy.random.default_rng seed of the bootstrap
    confidence_level: float  # of the percentile bootstrap CI
    alpha: float  # warn when the smallest attainable two-sided exact Wilcoxon p exceeds this


class CostSettings(Settings):
    """What the cost estimate prices: every LLM role, which explainers are compared (simulated and embedded),
    the sample counts and the budget (config ``llm.max_cost_usd``)."""

    explainers: dict[str, ExplainerRole]
    simulators: dict[str, SimulatorRole]
    scorers: dict[str, ScorerRole]
    embedders: dict[str, EmbedderRole]
    compared: list[str]
    max_extra_samples: int
    puzzle_samples: int
    adacs_embedder: str | None
    adacs_sets: list[str]
    puzzle_embedder: str | None
    max_cost_usd: float | None

    @classmethod
    def from_config(cls, config, wildcards=None) -> "CostSettings":
        explainers = config["explainers"]
        adacs, puzzles = config.get("adacs") or {}, config.get("puzzles") or {}
        return cls(
            explainers={k: ExplainerRole.model_validate(v) for k, v in explainers.items()},
            simulators={k: SimulatorRole.model_validate(v) for k, v in (config.get("simulators") or {}).items()},
            scorers={k: ScorerRole.model_validate(v) for k, v in (config.get("scorers") or {}).items()},
            embedders={k: EmbedderRole.model_validate(v) for k, v in (config.get("embedders") or {}).items()},
            compared=sorted(k for k, v in explainers.items() if v.get("role", "compared") == "compared"),
            max_extra_samples=config["llm"]["max_extra_samples"], puzzle_samples=puzzles.get("samples", 1),
            adacs_embedder=adacs.get("embedder") if adacs.get("references") else None,
            adacs_sets=sorted(adacs.get("references") or {}),
            puzzle_embedder=puzzles.get("embedder") if puzzles.get("sets") else None,
            max_cost_usd=config["llm"].get("max_cost_usd"))


class TablesSettings(Settings):
    formats: list[str] | None = None  # prompt_formats (and variants): the rows Table 6 ranks
    comparison_methods: list[str] | None = None  # methods compared with the formats, never ranked (N2G, ...)
    statistics: Statistics | None = None
    cost: CostSettings | None = None  # the cost estimate
    chunked: bool | None = None  # config chunks: usage files are per chunk ({format}/{chunk}.json)

    @classmethod
    def from_config(cls, config, wildcards) -> "TablesSettings":
        from autointerp.n2g.stage import METHODS

        n2g = (config.get("n2g") or {}).get("enabled", False)
        return cls(formats=sorted(config["prompt_formats"]),
                   comparison_methods=list(METHODS) if n2g else [],
                   statistics=Statistics.model_validate(config["tables"]),
                   cost=CostSettings.from_config(config), chunked=config.get("chunks") is not None)

    def need(self, *parts: str) -> Any:
        """The named parts (one value for one name); a part the rule did not send is a wiring error."""
        missing = [p for p in parts if getattr(self, p) is None]
        if missing:
            raise ValueError(f"tables settings lack {missing}: add them to the rule's stage_settings(TablesSettings, ...)")
        values = tuple(getattr(self, p) for p in parts)
        return values[0] if len(values) == 1 else values

    def kind_of(self, name: str) -> str:
        """``format`` (ranked) or ``comparison`` (reported beside the formats); anything else is an error."""
        formats, comparisons = self.need("formats", "comparison_methods")
        if name in formats:
            return "format"
        if name in comparisons:
            return "comparison"
        raise ValueError(f"{name!r} is neither a configured prompt format ({', '.join(formats)}) nor a comparison "
                         f"method ({', '.join(comparisons) or 'none enabled'})")
