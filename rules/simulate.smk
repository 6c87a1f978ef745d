# Simulate and score every explanation (Bills et al. 2023), then Table 2 and Table 6.

from autointerp.simulate.stage import SimulateSettings


rule simulate_score:
    input:
        explanations=f"{R}/{{subject}}/{{corpus}}/explanations/{{neuron_set}}/{{explainer}}/{{format}}{CH}.jsonl",
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.parquet",
        engine=engine_inputs("simulators"),
        budget=paid_gate("simulators"),
    output:
        scores=f"{R}/{{subject}}/{{corpus}}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}{CH}.parquet",
        predictions=f"{R}/{{subject}}/{{corpus}}/simulations/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}{CH}.parquet",
        usage=f"{R}/{{subject}}/{{corpus}}/usage/simulate/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}{CH}.json",
    params:
        settings=stage_settings(SimulateSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/simulate/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}{CH}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/simulate/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}{CH}.tsv"
    threads: config["llm"]["engine_threads"]
    resources:
        api_calls=1,
        api_share=api_share,
        local_engine=engine_slots("simulators"),
        mem_mb=3000,
        runtime=240,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/simulate/simulate_score.py"


if CHUNKED:

    rule gather_scores:
        localrule: True
        input:
            scores=chunk_files(f"{RUN}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}/{{chunk}}.parquet"),
            predictions=chunk_files(
                f"{RUN}/simulations/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}/{{chunk}}.parquet"),
        output:
            scores=f"{R}/{{subject}}/{{corpus}}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet",
            predictions=f"{R}/{{subject}}/{{corpus}}/simulations/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet",
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/simulate/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/simulate/gather_scores.py"
