# Checks when a run starts (not in dry runs): kept apart from rules/common.smk, whose helpers they call.
onstart:
    _missing = missing_api_keys(workflow.dag.needrun_jobs())
    if _missing:
        raise ConfigError(
            "this run calls endpoints that need a key, and the environment lacks "
            + "; ".join(f"${var} (for {', '.join(roles)})" for var, roles in _missing.items())
            + ": export it (dry runs with -n need none)"
        )
