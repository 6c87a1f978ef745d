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
    wildcard_constraints:
        explainer=one_of(EXPLAINERS),
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
        wildcard_constraints:
            explainer=one_of(EXPLAINERS),
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/explain/{{neuron_set}}/{{explainer}}/{{format}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/explain/gather_explanations.py"


# Imported explanations (imported_explanations): files written by someone else's explainer, turned into the same
# explanations files as rule explain writes, so every evaluation and table reads them unchanged.


rule released_file:
    input:
        released_source,
    output:
        "data/released/{name}",
    wildcard_constraints:
        name=one_of(RELEASED),
    log:
        "logs/released/{name}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/explain/released_file.py"


rule import_explanations:
    input:
        file=imported_file,
        neurons=f"{R}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.csv",
    output:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
        failures=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.failures.jsonl",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/import/{{neuron_set}}/{{explainer}}/{{format}}.json",
    wildcard_constraints:
        explainer=one_of(IMPORTED),
    params:
        settings=stage_settings(ExplainSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/import/{{neuron_set}}/{{explainer}}/{{format}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/explain/import_explanations.py"


rule import_puzzle_explanations:
    input:
        file=imported_file,
        puzzles=f"{R}/puzzles/{{puzzle_set}}/puzzles.json",
    output:
        explanations=f"{R}/puzzles/{{puzzle_set}}/explanations/{{explainer}}/{{format}}.jsonl",
        failures=f"{R}/puzzles/{{puzzle_set}}/explanations/{{explainer}}/{{format}}.failures.jsonl",
        usage=f"{R}/puzzles/{{puzzle_set}}/usage/import/{{explainer}}/{{format}}.json",
    wildcard_constraints:
        explainer=one_of(IMPORTED),
    params:
        settings=stage_settings(ExplainSettings),
    log:
        f"{LOGS}/puzzles/{{puzzle_set}}/import/{{explainer}}/{{format}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/explain/import_explanations.py"
