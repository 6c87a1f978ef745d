# Every results table: Table 1 (prompt tokens), the cost estimate, Tables 2-5, N2G's metrics and Table 6 (ranks
# of the prompt formats over the evaluation registry; comparison methods beside them, never ranked). Tables read
# finished stage outputs only, so they are cheap local jobs. Columns: docs/tables.md.

from autointerp.tables.settings import TablesSettings  # noqa: E402

# The parts each table reads (autointerp.tables.settings): formats vs comparison methods, paired statistics.
TABLE_KINDS = ("formats", "comparison_methods")
TABLE_PAIRED = (*TABLE_KINDS, "statistics")


rule cost_estimate:
    input:
        prompts=prompt_files,
        records=expand(f"{RUN}/records/{{neuron_set}}.parquet", neuron_set=NEURON_SETS),
    output:
        "results/cost_estimate.csv",
    params:
        settings=stage_settings(TablesSettings, "explainers"),
    log:
        "logs/cost_estimate.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/cost_estimate.py"


rule table5:
    input:
        HUMAN_EVAL.get("ratings") or [],
    output:
        "results/table5.csv",
    log:
        "logs/table5.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table5.py"


rule n2g_table:
    input:
        expand(f"{RUN}/n2g/{{neuron_set}}/metrics.csv", neuron_set=NEURON_SETS),
    output:
        "results/table_n2g.csv",
    log:
        "logs/table_n2g.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/n2g_table.py"


rule table1:
    input:
        compared_prompt_files,
    output:
        "results/table1.csv",
    log:
        "logs/table1.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table1.py"


rule table3:
    input:
        similarity_files,
    output:
        table="results/table3.csv",
        paired="results/table3_paired.csv",
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        "logs/table3.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table3.py"


rule table4:
    input:
        puzzle_similarity_files,
    output:
        table="results/table4.csv",
        paired="results/table4_paired.csv",
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        "logs/table4.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table4.py"


rule table2:
    input:
        scores=score_files,
        methods=n2g_score_files,
    output:
        table="results/table2.csv",
        paired="results/table2_paired.csv",
    params:
        settings=stage_settings(TablesSettings, *TABLE_PAIRED),
    log:
        "logs/table2.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table2.py"


rule table6:
    input:
        tables=evaluation_tables,
        # Not ranked, but the main command (results/table6.csv) should leave every table behind.
        companions=companion_tables,
    output:
        table="results/table6.csv",
        comparison="results/table6_comparison.csv",
        columns="results/table6_columns.csv",
    params:
        settings=stage_settings(TablesSettings, "formats"),
    log:
        "logs/table6.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/tables/table6.py"
