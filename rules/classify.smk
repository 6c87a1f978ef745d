# Classification scorers (detection, fuzzing; docs/classify.md): a chat model labels held-out excerpts from each
# explanation. Logprob-free, so any chat endpoint can score. One request per explanation; with chunks, one job per
# chunk (as simulate_score) and a gather per set.

from autointerp.classify.stage import ClassifySettings  # noqa: E402


rule classify:
    input:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}{CH}.jsonl",
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.parquet",
        engine=engine_inputs("scorers"),
        budget=paid_gate("scorers"),
    output:
        scores=f"{R}/{{subject}}/{{corpus}}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}{CH}.parquet",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}{CH}.json",
    wildcard_constraints:
        kind=one_of(CLASSIFY_KINDS),
        scorer=one_of(SCORERS),
    params:
        settings=stage_settings(ClassifySettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}{CH}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}{CH}.tsv"
    threads: config["llm"]["engine_threads"]
    resources:
        api_calls=1,
        api_share=api_share,
        local_engine=engine_slots("scorers"),
        mem_mb=3000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/classify/classify.py"


if CHUNKED:

    rule gather_classify:
        localrule: True
        input:
            scores=chunk_files(f"{RUN}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}/{{chunk}}.parquet"),
        output:
            scores=f"{R}/{{subject}}/{{corpus}}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}.parquet",
        wildcard_constraints:
            kind=one_of(CLASSIFY_KINDS),
            scorer=one_of(SCORERS),
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/{{kind}}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/simulate/gather_scores.py"
