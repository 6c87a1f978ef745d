# Prompt rendering: one JSONL per (neuron set, explainer, format); Table 1 of Lee et al. 2023.

from autointerp.prompts.stage import PromptSettings


rule render_prompts:
    input:
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.parquet",
    output:
        f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}{CH}.jsonl",
    wildcard_constraints:
        explainer=one_of(EXPLAINERS),
    params:
        settings=stage_settings(PromptSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}{CH}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prompts/render_prompts.py"


if CHUNKED:

    rule gather_prompts:
        localrule: True
        input:
            prompts=chunk_files(f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}/{{chunk}}.jsonl"),
        output:
            prompts=f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/prompts/gather_prompts.py"
