# Simulate and score every explanation (Bills et al. 2023), then Table 2 and Table 6.

from autointerp.simulate.stage import SimulateSettings


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
        settings=stage_settings(SimulateSettings),
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
        "../scripts/simulate/simulate_score.py"
