# Simulate and score every explanation (Bills et al. 2023), then Table 2 and Table 6.


rule simulate_score:
    input:
        explanations="results/{subject}/{corpus}/explanations/{neuron_set}/{explainer}/{format}.jsonl",
        records="results/{subject}/{corpus}/records/{neuron_set}.parquet",
        engine=engine_inputs("simulators"),
    output:
        scores="results/{subject}/{corpus}/scores/{neuron_set}/{explainer}/{simulator}/{format}.parquet",
        predictions="results/{subject}/{corpus}/simulations/{neuron_set}/{explainer}/{simulator}/{format}.parquet",
        usage="results/{subject}/{corpus}/usage/simulate/{neuron_set}/{explainer}/{simulator}/{format}.json",
    params:
        role=role_entry("simulators"),
        cache_dir=config["llm"]["cache_dir"],
    log:
        "logs/{subject}/{corpus}/simulate/{neuron_set}/{explainer}/{simulator}/{format}.log",
    benchmark:
        "benchmarks/{subject}/{corpus}/simulate/{neuron_set}/{explainer}/{simulator}/{format}.tsv"
    threads: config["llm"]["engine_threads"]
    resources:
        api_calls=1,
        local_engine=engine_slots("simulators"),
        mem_mb=3000,
        runtime=240,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/simulate_score.py"


rule table2:
    input:
        scores=score_files,
        methods=n2g_score_files,
    output:
        table="results/table2.csv",
        paired="results/table2_paired.csv",
    log:
        "logs/table2.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table2.py"


rule table6:
    input:
        tables=evaluation_tables,
        # Not ranked, but the main command (results/table6.csv) should leave every table behind.
        companions=companion_tables,
    output:
        "results/table6.csv",
    log:
        "logs/table6.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table6.py"
