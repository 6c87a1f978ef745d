# Subject model, corpus, activation extraction, neuron sets and records (the foundation's data contracts;
# the shard schema is in docs/data_contracts.md).


from autointerp.extract.stage import ExtractSettings


# Wildcards only ever take the configured values (fast, unambiguous DAG).
wildcard_constraints:
    subject=SUBJECT,
    model_id=one_of(MODEL_IDS),
    corpus=CORPUS,
    neuron_set=one_of(NEURON_SETS),
    format=one_of(FORMATS),
    explainer=one_of(EXPLAINERS),
    simulator=one_of(SIMULATORS) if SIMULATORS else "(?!)",
    puzzle_set=one_of(PUZZLE_SETS) if PUZZLE_SETS else "(?!)",


rule prepare_model:
    output:
        directory("data/models/{model_id}"),
    params:
        settings=stage_settings(ExtractSettings, "model"),
    log:
        "logs/models/{model_id}.log",
    benchmark:
        "benchmarks/models/{model_id}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/prepare_model.py"


rule build_corpus:
    input:
        model=model_dir,
    output:
        "results/{subject}/corpus/{corpus}.parquet",
    params:
        settings=stage_settings(ExtractSettings, "corpus"),
    log:
        "logs/{subject}/corpus/{corpus}.log",
    benchmark:
        "benchmarks/{subject}/corpus/{corpus}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/build_corpus.py"


rule extract_activations:
    input:
        model=model_dir,
        corpus=corpus_path,
    output:
        directory("results/{subject}/{corpus}/activations"),
    params:
        settings=stage_settings(ExtractSettings, "subject", "extraction"),
    log:
        "logs/{subject}/{corpus}/extract_activations.log",
    benchmark:
        "benchmarks/{subject}/{corpus}/extract_activations.tsv"
    threads: 8
    resources:
        # GPU, partition and runtime for clusters are set in profiles/slurm. Locally the extraction takes every
        # CPU lane: its threads would spin-wait for cores held by an engine job beside it.
        local_engine=ALL_LANES,
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/extract_activations.py"


rule neuron_set:
    input:
        unpack(neuron_set_inputs),
    output:
        f"{R}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.csv",
    params:
        settings=stage_settings(ExtractSettings, "neuron_set"),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/extract/neuron_set.py"


rule records:
    input:
        neurons=f"{R}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.csv",
        activations=activations_dir,
        corpus=corpus_path,
        model=model_dir,
    output:
        f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}.parquet",
    params:
        settings=stage_settings(ExtractSettings, "records"),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/records/{{neuron_set}}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/records/{{neuron_set}}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/records.py"
