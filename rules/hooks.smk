# Checks when a run starts (not in dry runs): kept apart from rules/common.smk, whose helpers they call.
# A dry run prints the plan first (neurons, cost from a stand-in neuron, disk): autointerp.tables.plan.
# (The command line: while the Snakefile is parsed Snakemake has not set up its executor, so workflow.dryrun is
# not known yet; jobs on a cluster re-parse it without -n.)
_DRY = any(a in ("--dry-run", "--dryrun") or (a.startswith("-") and not a.startswith("--") and "n" in a)
           for a in sys.argv[1:])
if _DRY and workflow.is_main_process:
    from autointerp.tables.plan import plan_lines

    for _line in plan_lines(config):
        print(_line, file=sys.stderr)

onstart:
    _missing = missing_api_keys(workflow.dag.needrun_jobs())
    if _missing:
        raise ConfigError(
            "this run calls endpoints that need a key, and the environment lacks "
            + "; ".join(f"${var} (for {', '.join(roles)})" for var, roles in _missing.items())
            + ": export it (dry runs with -n need none)"
        )
