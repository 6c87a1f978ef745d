# The explain stage (API calls with a persistent response cache) and the pre-run cost estimate.

from autointerp.explain.stage import ExplainSettings


rule explain:
    input:
        prompts=f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
        engine=engine_inputs("explainers"),
        budget=paid_gate("explainers"),
    output:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
        failures=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.failures.jsonl",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/explain/{{neuron_set}}/{{explainer}}/{{format}}.json",
    params:
        settings=stage_settings(ExplainSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}.tsv"
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
