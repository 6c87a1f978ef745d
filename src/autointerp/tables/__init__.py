"""Stage 'tables': every results table (columns: docs/tables.md).

settings (TablesSettings), pairing (paired cells and comparisons), prompt_tokens (Table 1), cost (cost estimate),
simulation_scores (Table 2), explanation_similarity (Tables 3, 4), human (Table 5 job), n2g_metrics (N2G's own
metrics), evaluations (the registry of Table 6 columns), ranking (Table 6).
"""
