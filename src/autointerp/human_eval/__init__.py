"""Blinded human evaluation of explanations (Lee et al. 2023, Figure 4 / Table 5).

Raters see a neuron's top activating excerpts and the explanations of every prompt format in a per-rater random
order without format names, rate each 1–5 and pick the best. The workflow writes a study template; ratings go
into a rating database outside results/ (``init``), so no rerun can erase them.
``python -m autointerp.human_eval --help``; docs/human_eval.md describes the workflow and the trust model.
"""

from autointerp.human_eval.store import (SCORE_LABELS, StudyError, ValidationError, export_ratings, export_rows,
                                         get_or_create_rater, init_rating_db, prepare_study, progress, record_item,
                                         table5)
from autointerp.human_eval.web import HumanEvalApp, make_http_server, serve

__all__ = ["SCORE_LABELS", "HumanEvalApp", "StudyError", "ValidationError", "export_ratings", "export_rows",
           "get_or_create_rater", "init_rating_db", "make_http_server", "prepare_study", "progress", "record_item",
           "serve", "table5"]
