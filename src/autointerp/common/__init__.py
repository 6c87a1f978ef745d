"""Shared helpers: atomic I/O, config validation, the Snakemake script adapter, activation records."""
