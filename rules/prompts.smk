# Prompt rendering: one JSONL per (neuron set, explainer, format); Table 1 of Lee et al. 2023.

from autointerp.prompts.stage import PromptSettings


rule render_prompts:
    input:
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}.parquet",
    output:
        f"{R}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
    params:
        settings=stage_settings(PromptSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prompts/render_prompts.py"
