# The explain stage (API calls with a persistent response cache) and the pre-run cost estimate.

from autointerp.explain.stage import ExplainSettings


if API_KEY_VARS:

    envvars:
        *API_KEY_VARS,


rule explain:
    input:
        prompts="results/{subject}/{corpus}/prompts/{neuron_set}/{explainer}/{format}.jsonl",
        engine=engine_inputs("explainers"),
    output:
        explanations="results/{subject}/{corpus}/explanations/{neuron_set}/{explainer}/{format}.jsonl",
        failures="results/{subject}/{corpus}/explanations/{neuron_set}/{explainer}/{format}.failures.jsonl",
        usage="results/{subject}/{corpus}/usage/explain/{neuron_set}/{explainer}/{format}.json",
    params:
        settings=stage_settings(ExplainSettings),
    log:
        "logs/{subject}/{corpus}/explain/{neuron_set}/{explainer}/{format}.log",
    benchmark:
        "benchmarks/{subject}/{corpus}/explain/{neuron_set}/{explainer}/{format}.tsv"
    threads: config["llm"]["engine_threads"]
    resources:
        api_calls=1,
        local_engine=engine_slots("explainers"),
        mem_mb=3000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/explain/explain.py"
