"""Stage 'tables': every results table, the evaluation registry and the cost estimate."""
