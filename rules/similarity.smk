# Explanation similarity (AdaCS, Table 3) and Neuron Puzzles (Table 4); both feed Table 6 via the registry.

from autointerp.explain.stage import ExplainSettings
from autointerp.prompts.stage import PromptSettings
from autointerp.similarity.stage import SimilaritySettings


rule adacs_similarity:
    input:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl",
        references=reference_inputs,
        budget=paid_gate("embedders", ADACS.get("embedder")),
    output:
        similarity=f"{R}/{{subject}}/{{corpus}}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.parquet",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/embed/{{neuron_set}}/{{explainer}}/{{format}}.json",
    params:
        settings=stage_settings(SimilaritySettings, "embedder", "role", "reference", "normalise", "cache_dir"),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.tsv"
    threads: 1
    resources:
        api_calls=1,
        api_share=api_share,
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/similarity/adacs_similarity.py"


rule puzzle_set:
    input:
        unpack(puzzle_set_inputs),
    output:
        f"{R}/puzzles/{{puzzle_set}}/puzzles.json",
    params:
        settings=stage_settings(SimilaritySettings, "puzzle_set", "cache_dir"),
    log:
        f"{LOGS}/puzzles/{{puzzle_set}}/puzzle_set.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/similarity/puzzle_set.py"


rule render_puzzle_prompts:
    input:
        f"{R}/puzzles/{{puzzle_set}}/puzzles.json",
    output:
        f"{R}/puzzles/{{puzzle_set}}/prompts/{{explainer}}/{{format}}.jsonl",
    wildcard_constraints:
        explainer=one_of(EXPLAINERS),
    params:
        settings=stage_settings(PromptSettings),
    log:
        f"{LOGS}/puzzles/{{puzzle_set}}/prompts/{{explainer}}/{{format}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/similarity/render_puzzle_prompts.py"


rule explain_puzzles:
    input:
        prompts=f"{R}/puzzles/{{puzzle_set}}/prompts/{{explainer}}/{{format}}.jsonl",
        engine=engine_inputs("explainers"),
        budget=paid_gate("explainers"),
    output:
        explanations=f"{R}/puzzles/{{puzzle_set}}/explanations/{{explainer}}/{{format}}.jsonl",
        failures=f"{R}/puzzles/{{puzzle_set}}/explanations/{{explainer}}/{{format}}.failures.jsonl",
        usage=f"{R}/puzzles/{{puzzle_set}}/usage/explain/{{explainer}}/{{format}}.json",
    wildcard_constraints:
        explainer=one_of(EXPLAINERS),
    params:
        settings=stage_settings(ExplainSettings),
    log:
        f"{LOGS}/puzzles/{{puzzle_set}}/explain/{{explainer}}/{{format}}.log",
    benchmark:
        f"{BENCH}/puzzles/{{puzzle_set}}/explain/{{explainer}}/{{format}}.tsv"
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


rule puzzle_similarity:
    input:
        explanations=f"{R}/puzzles/{{puzzle_set}}/explanations/{{explainer}}/{{format}}.jsonl",
        budget=paid_gate("embedders", PUZZLES.get("embedder")),
    output:
        similarity=f"{R}/puzzles/{{puzzle_set}}/similarity/{{explainer}}/{{format}}.parquet",
        usage=f"{R}/puzzles/{{puzzle_set}}/usage/embed/{{explainer}}/{{format}}.json",
    params:
        settings=stage_settings(SimilaritySettings, "embedder", "role", "cache_dir"),
    log:
        f"{LOGS}/puzzles/{{puzzle_set}}/similarity/{{explainer}}/{{format}}.log",
    threads: 1
    resources:
        api_calls=1,
        api_share=api_share,
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/similarity/puzzle_similarity.py"
