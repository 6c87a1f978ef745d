"""The report stage's settings: what the neuron pages, plots and export name and compare."""

from __future__ import annotations

from autointerp.common.settings import Settings
from autointerp.tables.settings import Statistics


class ReportSettings(Settings):
    subject_model: str  # config subject.model
    formats: list[str]  # prompt formats and variants (ranked)
    comparison_methods: list[str]  # N2G and its baseline when enabled (shown beside, never ranked)
    baseline_format: str | None  # paired differences are taken against it: Original when configured
    explainer_models: dict[str, str]  # compared explainer -> model
    simulator_models: dict[str, str]
    embedder_model: str | None  # the AdaCS embedder's model
    statistics: Statistics  # bootstrap of the plots' intervals (the tables' settings, so they agree)
    max_pages_per_set: int | None = None  # config report.max_pages_per_set (None: every neuron)

    @classmethod
    def from_config(cls, config, wildcards=None) -> "ReportSettings":
        from autointerp.n2g.stage import METHODS

        formats = sorted(config["prompt_formats"])
        explainers = config["explainers"]
        adacs = config.get("adacs") or {}
        embedder = (config.get("embedders") or {}).get(adacs.get("embedder") or "") if adacs.get("references") else None
        return cls(
            subject_model=config["subject"]["model"],
            formats=formats,
            comparison_methods=list(METHODS) if (config.get("n2g") or {}).get("enabled", False) else [],
            baseline_format="Original" if "Original" in formats else (formats[0] if formats else None),
            explainer_models={k: v["model"] for k, v in explainers.items() if v.get("role", "compared") == "compared"},
            simulator_models={k: v["model"] for k, v in (config.get("simulators") or {}).items()},
            embedder_model=embedder["model"] if embedder else None,
            statistics=Statistics.model_validate(config["tables"]),
            max_pages_per_set=config["report"]["max_pages_per_set"],
        )
