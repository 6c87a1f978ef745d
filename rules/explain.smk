# The explain stage (API calls with a persistent response cache) and the pre-run cost estimate.


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
        role=role_entry("explainers"),
        cache_dir=config["llm"]["cache_dir"],
        max_extra_samples=config["llm"]["max_extra_samples"],
        max_invalid_fraction=config["llm"]["max_invalid_fraction"],
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
