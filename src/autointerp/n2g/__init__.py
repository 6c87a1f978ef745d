"""N2G — Neuron to Graph (Foote et al. 2023), reimplemented from ``shared/research/n2g.md``.

A neuron's top examples are pruned to the shortest left context that keeps the pivot (argmax) the argmax
with > 50% of its activation (plus <= 5 following tokens of its sentence); each token's importance for
each activation is measured by masking it; important tokens are substituted to explore variants; every
activating token then gives a *line* (activating token, important context backwards, one-token wildcards
elsewhere, END = its normalised activation), the lines go into a trie whose wildcard branches absorb
their siblings' continuations, and prediction walks backwards from each token greedily.

Public API::

    probe = NeuronProbe(loaded_model, layer, neuron)                     # hook blocks.{layer}.mlp.hook_post
    entry = load_records(path)[NeuronId(layer, neuron)]                  # autointerp.extract.records
    ids = record_token_ids(path)                                         # {excerpt_id: token ids}
    model, scores = fit_and_evaluate(probe, entry, ids)                  # train on train, score on valid
    model = fit_neuron(probe, records, ids, a_max=..., forbidden_excerpt_ids=valid_ids,
                       config=N2GConfig(augmentation="off"), substitutes=None)
    model.predict(tokens) / model.predict_records(records)               # normalised activations
    model.to_dot(); model.render_svg(path); model.describe()             # DOT, SVG (needs `dot`), text
    model.to_dict() / N2GModel.from_dict(d)                              # lines + config: exact round trip
    evaluate_predictions(preds, records, a_max, sources)                 # score_simulations + firing_P/R/F1
    firing_metrics(true_norm, pred_norm, 0.5)
    TokenLookup.fit(records, a_max), NGramLookup.fit(records, a_max, n=5)   # paper baselines
    Trie.build(lines), make_line(...), Line                               # the trie alone (hand-built tests)
    prune(probe, ids), saliency(probe, prompts, mask_id), NextTokenSubstitutes, neutral_token_id

Decisions (see also the module docstrings):

- Forward passes take token ids; nothing is re-tokenised and nothing is prepended (records are corpus
  windows without BOS). Pruning candidates are slices of the ids, right-padded, batched shortest first 16
  lengths per forward pass (``prune_chunk``; None = all in one batch), and only real positions are read. Every context length 1..``max_context`` (64) is tried (the reference: steps
  of 5 up to 30, then the longest as a fallback even if it fails); a pivot with no passing candidate is
  dropped, which cannot happen while ``max_context`` >= the example length.
- Masking token: the subject tokenizer's pad token, else eos, else unk, else bos (``neutral_token_id``):
  SmolLM2 ``<|im_end|>``, GPT-2 ``<|endoftext|>``; never id 1. An explicit all-ones attention mask keeps the
  bridge from treating it as padding.
- Augmentation (DistilBERT in the paper, unavailable offline): ``NextTokenSubstitutes``, the subject's own
  most probable next tokens at each important position (same word shape, different from the original,
  p >= 1e-5, <= 5 per position), one token for one token; or ``N2GConfig(augmentation="off")``; or any
  callable ``(token_ids, positions, n) -> {position: [token ids]}``.
- Duplicate END values are averaged (``combine="mean"``; "max" and the reference's "first" available).
- Special tokens are never important context: they become wildcards (the reference skipped BOS).
- N2G predicts normalised activations; ``evaluate_predictions`` passes prediction x ``a_max`` to
  ``score_simulations``, so the Pearson scores are exactly the simulator's.

Reference bugs avoided (spec §13): 2 (aggregated duplicate ENDs), 3 (substitutes differ from the masked
token; variants deduplicated), 4 (no fake positive/negative split), 5 (equal-length variants), 6 (real
neutral masking token), 7 (importance 0 where the unmasked activation is <= 0), 8 (no double BOS), 9 (no
re-tokenisation; argmax over real positions only), 10 (validation texts with no firing are scored, not
dropped), 11 (no padding of truth/predictions), 13 (one implementation; END value of the deepest END passed;
merging always applied), 14 (n-gram threshold on normalised activations), 15 (no globals), 16 (exact
pruning, no failing fallback). Everything is deterministic for fixed inputs (no sampling; insertion order).
"""

from autointerp.n2g.baselines import NGramLookup, TokenLookup
from autointerp.n2g.evaluate import evaluate_predictions, firing_metrics, fit_and_evaluate, record_token_ids
from autointerp.n2g.fit import (N2GConfig, NextTokenSubstitutes, PrunedPrompt, SubstituteSource, TrainValidOverlapError, augment,
                  check_disjoint, fit_neuron, importance_matrix, prune, sample_lines, saliency, saliency_batch)
from autointerp.n2g.model import N2GModel, normalise_token
from autointerp.n2g.probe import DEFAULT_HOOK, NeuronProbe, neutral_token_id
from autointerp.n2g.render import describe, render_svg, to_dot
from autointerp.n2g.trie import Line, Trie, make_line

__all__ = [
    "DEFAULT_HOOK", "Line", "N2GConfig", "N2GModel", "NGramLookup", "NeuronProbe", "NextTokenSubstitutes",
    "PrunedPrompt", "SubstituteSource", "TokenLookup", "TrainValidOverlapError", "Trie", "augment",
    "check_disjoint", "describe", "evaluate_predictions", "firing_metrics", "fit_and_evaluate", "fit_neuron",
    "importance_matrix", "make_line", "neutral_token_id", "normalise_token", "prune", "record_token_ids",
    "render_svg", "sample_lines", "saliency", "saliency_batch", "to_dot",
]
