# The explain stage (API calls with a persistent response cache) and the pre-run cost estimate.

from autointerp.explain.stage import ExplainSettings


rule explain:
    input:
        prompts=R + "/{subject}/{corpus}/prompts/{neuron_set}/{explainer}/{format}.jsonl",
        engine=engine_inputs("explainers"),
        budget=paid_gate("explainers"),
    output:
        explanations=R + "/{subject}/{corpus}/explanations/{neuron_set}/{explainer}/{format}.jsonl",
        failures=R + "/{subject}/{corpus}/explanations/{neuron_set}/{explainer}/{format}.failures.jsonl",
        usage=R + "/{subject}/{corpus}/usage/explain/{neuron_set}/{explainer}/{format}.json",
    params:
        settings=stage_settings(ExplainSettings),
    log:
        LOGS + "/{subject}/{corpus}/explain/{neuron_set}/{explainer}/{format}.log",
    benchmark:
        BENCH + "/{subject}/{corpus}/explain/{neuron_set}/{explainer}/{format}.tsv"
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
