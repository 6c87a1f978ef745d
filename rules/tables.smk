# Every results table: Table 1 (prompt tokens), the cost estimate, Tables 2-5, N2G's metrics and Table 6 (ranks
# of the prompt formats over the evaluation registry; comparison methods beside them, never ranked). Tables read
# finished stage outputs only, so they are cheap local jobs. Columns: docs/tables.md.

from autointerp.tables.settings import TablesSettings  # noqa: E402

# The parts each table reads (autointerp.tables.settings): formats vs comparison methods, paired statistics.
TABLE_KINDS = ("formats", "comparison_methods")
TABLE_PAIRED = (*TABLE_KINDS, "statistics")


rule cost_estimate:
    # Every paid job waits for this one (paid_gate): the estimate is printed and written before the first paid
    # call, and llm.max_cost_usd stops the run here.
    input:
        prompts=explained_prompt_files,
        puzzle_prompts=puzzle_prompt_files,
        # Prices come from rendered prompts: a run of imported explanations renders none, so it reads no records
        # (which would extract the subject's activations just to price nothing).
        records=expand(f"{RUN}/records/{{neuron_set}}.parquet", neuron_set=NEURON_SETS) if GENERATED else [],
    output:
        report(f"{R}/cost_estimate.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, "cost"),
    log:
        f"{LOGS}/cost_estimate.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/cost_estimate.py"


rule table5:
    input:
        HUMAN_EVAL.get("ratings") or [],
    output:
        report(f"{R}/table5.csv", category="Tables"),
    log:
        f"{LOGS}/table5.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table5.py"


rule n2g_table:
    input:
        expand(f"{RUN}/n2g/{{neuron_set}}/metrics.csv", neuron_set=NEURON_SETS),
    output:
        report(f"{R}/table_n2g.csv", category="Tables"),
    log:
        f"{LOGS}/table_n2g.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/n2g_table.py"


rule table1:
    input:
        compared_prompt_files,
    output:
        report(f"{R}/table1.csv", category="Tables"),
    log:
        f"{LOGS}/table1.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table1.py"


rule table3:
    input:
        similarity=similarity_files,
        neuron_sets=expand(f"{RUN}/neuron_sets/{{neuron_set}}.csv", neuron_set=ADACS_SETS),
    output:
        table=report(f"{R}/table3.csv", category="Tables"),
        paired=report(f"{R}/table3_paired.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        f"{LOGS}/table3.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table3.py"


rule table4:
    input:
        puzzle_similarity_files,
    output:
        table=report(f"{R}/table4.csv", category="Tables"),
        paired=report(f"{R}/table4_paired.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        f"{LOGS}/table4.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table4.py"


rule table2:
    input:
        scores=score_files,
        methods=n2g_score_files,
        neuron_sets=expand(f"{RUN}/neuron_sets/{{neuron_set}}.csv", neuron_set=NEURON_SETS),
    output:
        table=report(f"{R}/table2.csv", category="Tables"),
        paired=report(f"{R}/table2_paired.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        f"{LOGS}/table2.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table2.py"


rule table_classify:
    # Detection and fuzzing (docs/classify.md): Table 2's shape on balanced accuracy, each cell with its chance floor.
    input:
        scores=lambda w: classify_files(w.kind)(),
        neuron_sets=expand(f"{RUN}/neuron_sets/{{neuron_set}}.csv", neuron_set=NEURON_SETS),
    output:
        table=report(f"{R}/table_{{kind}}.csv", category="Tables"),
        paired=report(f"{R}/table_{{kind}}_paired.csv", category="Tables"),
        metrics=report(f"{R}/table_{{kind}}_metrics.csv", category="Tables"),
    wildcard_constraints:
        kind=one_of(CLASSIFY_KINDS),
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        f"{LOGS}/table_{{kind}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table_classify.py"


rule scorer_comparison:
    # Each classification scorer beside simulation: rank correlation and tokens/requests per explanation.
    input:
        simulation=score_files,
        simulation_usage=usage_files("simulate", "simulator", SIMULATORS),
        **{kind: classify_files(kind) for kind in CLASSIFY_KINDS},
        **{f"{kind}_usage": usage_files(kind, "scorer", scorers_of(kind)) for kind in CLASSIFY_KINDS},
    output:
        report(f"{R}/table_scorers.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, "chunked"),
    log:
        f"{LOGS}/table_scorers.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/scorer_comparison.py"


rule table6:
    input:
        tables=evaluation_tables,
        # Not ranked, but the main command (results/table6.csv) should leave every table behind.
        companions=companion_tables,
    output:
        table=report(f"{R}/table6.csv", category="Tables"),
        comparison=report(f"{R}/table6_comparison.csv", category="Tables"),
        columns=report(f"{R}/table6_columns.csv", category="Tables"),
    params:
        settings=stage_settings(TablesSettings, "formats"),
    log:
        f"{LOGS}/table6.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table6.py"


rule table_imported:
    # What each imported file covers and what can be computed from it (docs/imported.md).
    input:
        usage=imported_usage_files,
        similarity=lambda w: _per_explainer(f"{RUN}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.parquet",
                                            IMPORTED, ADACS_SETS),
        scores=lambda w: _per_explainer(f"{RUN}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet",
                                        IMPORTED, simulator=SIMULATORS),
    output:
        report(f"{R}/table_imported.csv", category="Tables"),
    log:
        f"{LOGS}/table_imported.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table_imported.py"


rule paper_comparison:
    # This run's Tables 3 and 4 beside the values a paper reports (config paper_reported), with rank agreement.
    input:
        table3=f"{R}/table3.csv" if ADACS_SETS else [],
        table4=f"{R}/table4.csv" if PUZZLE_SETS else [],
        reported=config.get("paper_reported") or [],
    output:
        report(f"{R}/table_paper.csv", category="Tables"),
    log:
        f"{LOGS}/table_paper.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/paper_comparison.py"
