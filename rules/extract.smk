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
    explainer=one_of(EXPLAINERS + IMPORTED),
    simulator=one_of(SIMULATORS),
    puzzle_set=one_of(PUZZLE_SETS),
    shard=one_of(SHARDS),
    layer_group=one_of(LAYER_GROUPS),
    chunk=CHUNK_PATTERN,


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


rule extract_shard:
    input:
        model=model_dir,
        corpus=corpus_path,
    output:
        # Intermediate: deleted once every merge job has read it (GPT-2 XL: ~0.2 GB per layer and shard).
        temp(directory("results/{subject}/{corpus}/activation_shards/{shard}")),
    params:
        settings=stage_settings(ExtractSettings, "subject", "extraction"),
    log:
        "logs/{subject}/{corpus}/extract_shard/{shard}.log",
    benchmark:
        "benchmarks/{subject}/{corpus}/extract_shard/{shard}.tsv"
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
        "../scripts/extract/extract_shard.py"


rule merge_activations:
    input:
        shard_dirs,
    output:
        directory("results/{subject}/{corpus}/activations/{layer_group}"),
    params:
        settings=stage_settings(ExtractSettings, "subject", "extraction"),
    log:
        "logs/{subject}/{corpus}/merge_activations/{layer_group}.log",
    benchmark:
        "benchmarks/{subject}/{corpus}/merge_activations/{layer_group}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/merge_activations.py"


rule activations_manifest:
    input:
        expand("results/{{subject}}/{{corpus}}/activations/{layer_group}", layer_group=LAYER_GROUPS),
    output:
        "results/{subject}/{corpus}/activations/manifest.json",
    log:
        "logs/{subject}/{corpus}/activations_manifest.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/extract/activations_manifest.py"


rule neuron_set:
    input:
        unpack(neuron_set_inputs),
    output:
        f"{R}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.csv",
    params:
        settings=stage_settings(ExtractSettings, "neuron_set", "shape"),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/neuron_sets/{{neuron_set}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/extract/neuron_set.py"


rule records:
    input:
        unpack(records_inputs),
    output:
        f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.parquet",
    params:
        settings=stage_settings(ExtractSettings, "records", *(["chunk"] if CHUNKED else [])),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/records/{{neuron_set}}{CH}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract/records.py"


if CHUNKED:

    rule gather_records:
        localrule: True
        input:
            records=chunk_files(f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}/{{chunk}}.parquet"),
        output:
            records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}.parquet",
        log:
            f"{LOGS}/{{subject}}/{{corpus}}/records/{{neuron_set}}.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/extract/gather_records.py"
