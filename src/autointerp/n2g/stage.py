"""N2G in the pipeline: fit each neuron's graph on its train records, predict its valid records, and score the
predictions exactly like the simulator's (pooled Pearson, top-only, random-only), so N2G and the N2G paper's
token-lookup baseline appear as comparison rows of Table 2 and beside the formats in Table 6's comparison
table (never ranked with them). Also writes the N2G paper's own metrics (firing precision/recall/F1 at
normalised activation 0.5), each neuron's graph (DOT, SVG when Graphviz is installed, JSON) and a short text
rendering of its main patterns.
"""

from __future__ import annotations

import logging
import shutil
import time

import pyarrow as pa

from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO
from autointerp.common.io import atomic_dir, atomic_write_parquet, write_csv
from autointerp.extract.records import load_records
from autointerp.simulate.stage import SCORE_SCHEMA
from autointerp.common.snakemake_io import usable_threads

log = logging.getLogger("autointerp.n2g")

METHODS = ("N2G", "TokenLookup")


def _score_row(nid, method, sample_text, scores) -> dict:
    keys = [f.name for f in SCORE_SCHEMA]
    row = {"layer": nid.layer, "neuron": nid.neuron, "format": method, "sample": 0, "explanation": sample_text,
           "n_no_digit": 0, "n_merged": 0}
    row.update({k: v for k, v in scores.items() if k in keys})
    return {k: row.get(k) for k in keys}


class N2GSettings(Settings):
    hook: str  # the subject's hook template (the neuron N2G imitates)
    augmentation: bool
    device: str

    @classmethod
    def from_config(cls, config, wildcards) -> "N2GSettings":
        return cls(hook=config["subject"]["hook"], augmentation=config["n2g"]["augmentation"],
                   device=config["subject"]["device"])


def run_n2g(settings: N2GSettings, io: RuleIO) -> dict:
    """Rule n2g: fit and score N2G and the token-lookup baseline for every neuron of one neuron set."""
    from autointerp.extract.subject_models import resolve_device

    o = io.output
    return run_n2g_job(io.input["records"], io.input["model"], {"N2G": o["n2g"], "TokenLookup": o["lookup"]},
                       o["metrics"], o["graphs"], hook=settings.hook, augmentation=settings.augmentation,
                       device=resolve_device(settings.device), threads=io.threads)


def run_n2g_job(records_path, model_dir, out_scores: dict, metrics_path, graphs_dir, *, hook: str,
                augmentation: bool = True, device: str = "cpu", threads: int | None = None) -> dict:
    import torch

    from autointerp.n2g import N2GConfig, NeuronProbe, TokenLookup, evaluate_predictions, fit_and_evaluate, record_token_ids
    from autointerp.extract.subject_models import load_prepared_model

    if threads:
        torch.set_num_threads(usable_threads(threads))
    model = load_prepared_model(model_dir, device=device)
    entries = load_records(records_path)
    token_ids = record_token_ids(records_path)
    config = N2GConfig(augmentation="model" if augmentation else "off")
    rows = {m: [] for m in METHODS}
    metrics = []
    with atomic_dir(graphs_dir) as tmp:
        started = time.perf_counter()
        have_dot = shutil.which("dot") is not None
        for nid in sorted(entries):
            entry = entries[nid]
            probe = NeuronProbe(model, nid.layer, nid.neuron, hook=hook)
            fitted, scores = fit_and_evaluate(probe, entry, token_ids, config=config)
            text = fitted.describe()
            rows["N2G"].append(_score_row(nid, "N2G", text, scores))
            lookup = TokenLookup.fit(entry["train"], float(entry["max_activation"]))
            lscores = evaluate_predictions(lookup.predict_records(entry["valid"]), entry["valid"],
                                           float(entry["max_activation"]), entry["valid_sources"])
            rows["TokenLookup"].append(_score_row(nid, "TokenLookup", "", lscores))
            for method, sc in (("N2G", scores), ("TokenLookup", lscores)):
                metrics.append({"layer": nid.layer, "neuron": nid.neuron, "method": method,
                                **{k: sc.get(k) for k in ("score", "firing_precision", "firing_recall", "firing_f1")}})
            stem = f"layer{nid.layer:03d}_neuron{nid.neuron:05d}"
            (tmp / f"{stem}.dot").write_text(fitted.to_dot())
            (tmp / f"{stem}.txt").write_text(text + "\n")
            (tmp / f"{stem}.json").write_text(fitted.to_json())
            if have_dot:
                fitted.render_svg(tmp / f"{stem}.svg")
    seconds = time.perf_counter() - started
    for method, path in out_scores.items():
        atomic_write_parquet(pa.Table.from_pylist(rows[method], schema=SCORE_SCHEMA), path)
    write_csv(metrics, metrics_path, ["layer", "neuron", "method", "score", "firing_precision", "firing_recall",
                                      "firing_f1"])
    return {"neurons": len(entries), "seconds": round(seconds, 2),
            "seconds_per_neuron": round(seconds / max(1, len(entries)), 2), "svg": have_dot,
            "augmentation": bool(augmentation)}
