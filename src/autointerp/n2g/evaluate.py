"""Scoring N2G (and its baselines) like the simulator, plus the paper's firing precision / recall / F1."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from autointerp.common.records import ActivationRecord
from autointerp.simulate.scoring import score_simulations


def firing_metrics(true_norm: Sequence[Sequence[float]], pred_norm: Sequence[Sequence[float]],
                   threshold: float = 0.5) -> dict:
    """Token-level metrics of the firing class, pooled over all tokens (spec §9): a token fires when its
    normalised activation is >= ``threshold`` (truth and prediction alike).

    precision is NaN when nothing is predicted to fire, recall is NaN when nothing truly fires, F1 is 0
    when one of the two sides fires but there is no true positive, NaN when neither fires.
    """
    t = np.concatenate([np.asarray(x, dtype=float) for x in true_norm]) if len(true_norm) else np.zeros(0)
    p = np.concatenate([np.asarray(x, dtype=float) for x in pred_norm]) if len(pred_norm) else np.zeros(0)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} true values but {len(p)} predictions")
    tf, pf = t >= threshold, p >= threshold
    tp, fp, fn = int(np.sum(tf & pf)), int(np.sum(~tf & pf)), int(np.sum(tf & ~pf))
    tn = int(len(t) - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    if tp:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = 0.0 if (tp + fp + fn) else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "n_true_firing": tp + fn, "n_pred_firing": tp + fp}


def evaluate_predictions(predictions: Sequence[Sequence[float]], records: Sequence[ActivationRecord],
                         a_max: float, sources: Sequence[str] | None = None, *, threshold: float = 0.5) -> dict:
    """``scoring.score_simulations`` on (true activations, predictions x a_max) — the simulator's scores,
    Pearson being scale-free — plus ``firing_precision``/``firing_recall``/``firing_f1`` (and counts)
    at normalised ``threshold``."""
    true = [list(r.activations) for r in records]
    out = score_simulations(true, [np.asarray(p, dtype=float) * a_max for p in predictions], sources)
    fm = firing_metrics([np.asarray(x, dtype=float) / a_max for x in true], predictions, threshold)
    out.update({f"firing_{k}": v for k, v in fm.items()})
    return out


def fit_and_evaluate(probe, entry: dict, token_ids, *, extra_records: Sequence[ActivationRecord] = (),
                     config=None, substitutes=None):
    """Fit on a neuron's ``train`` records (plus ``extra_records``, e.g. more of its top records) and score
    on its ``valid`` ones. ``entry`` is one value of ``record_splits.load_records``. Any training record
    whose excerpt id is a valid one raises ``TrainValidOverlapError``. Returns (model, scores)."""
    from autointerp.n2g.fit import N2GConfig, fit_neuron

    valid = entry["valid"]
    if any(r.excerpt_id is None for r in valid):
        raise ValueError("valid records need excerpt ids to keep them out of training")
    model = fit_neuron(probe, list(entry["train"]) + list(extra_records), token_ids,
                       a_max=float(entry["max_activation"]), forbidden_excerpt_ids=[r.excerpt_id for r in valid],
                       config=config or N2GConfig(), substitutes=substitutes)
    scores = evaluate_predictions(model.predict_records(valid), valid, model.a_max, entry.get("valid_sources"))
    return model, scores


def record_token_ids(path) -> dict[int, list[int]]:
    """{excerpt_id: token ids} from a records Parquet file (its ``token_ids`` column)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["excerpt_id", "token_ids"])
    return {int(e): [int(t) for t in ids] for e, ids in zip(table.column("excerpt_id").to_pylist(),
                                                           table.column("token_ids").to_pylist())}
