# Prompt rendering: one JSONL per (neuron set, explainer, format); Table 1 of Lee et al. 2023.


rule render_prompts:
    input:
        records="results/{subject}/{corpus}/records/{neuron_set}.parquet",
    output:
        "results/{subject}/{corpus}/prompts/{neuron_set}/{explainer}/{format}.jsonl",
    params:
        spec=format_spec,
        encoding=explainer_setting("encoding"),
        context_length=explainer_setting("context_length"),
        max_completion_tokens=config["prompts"]["max_completion_tokens"],
        mutate_like_seed=config["prompts"]["mutate_like_seed"],
    log:
        "logs/{subject}/{corpus}/prompts/{neuron_set}/{explainer}/{format}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/prompts/render_prompts.py"
