# The explain stage (API calls with a persistent response cache) and the pre-run cost estimate.

from autointerp.explain.stage import ExplainSettings


rule explain:
    input:
        prompts=f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}{CH}.jsonl",
        engine=engine_inputs("explainers"),
        budget=paid_gate("explainers"),
    output:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}{CH}.jsonl",
        failures=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}{CH}.failures.jsonl",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/explain/{{neuron_set}}/{{explainer}}/{{format}}{CH}.json",
    params:
        settings=stage_settings(ExplainSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}{CH}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}{CH}.tsv"
    threads: config["llm"]["engine_threads"]
    resources:
        api_calls=1,
        api_share=api_share,
        local_engine=engine_slots("explainers"),
        mem_mb=3000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/explain/explain.py"


if CHUNKED:

    rule gather_explanations:
        localrule: True
        input:
            explanations=chunk_files(f"{RUN}/explanations/{{neuron_set}}/{{explainer}}/{{format}}/{{chunk}}.jsonl"),
            failures=chunk_files(f"{RUN}/explanations/{{neuron_set}}/{{explainer}}/{{format}}/{{chunk}}.failures.jsonl"),
        output:
            explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
            failures=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.failures.jsonl",
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/explain/gather_explanations.py"
