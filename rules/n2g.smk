# N2G (Foote et al. 2023): graph explanations fitted on the train records, scored on the valid records like the
# simulator; rows of Table 2 (and so entries of Table 6), plus the N2G paper's own metrics.

from autointerp.n2g.stage import N2GSettings


rule n2g:
    input:
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}.parquet",
        model=model_dir,
    output:
        n2g=f"{R}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}/N2G.parquet",
        lookup=f"{R}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}/TokenLookup.parquet",
        metrics=f"{R}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}/metrics.csv",
        graphs=directory(f"{R}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}/graphs"),
    params:
        settings=stage_settings(N2GSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}.log",
    benchmark:
        f"{BENCH}/{{subject}}/{{corpus}}/n2g/{{neuron_set}}.tsv"
    threads: 1
    resources:
        # CPU-bound like the engine jobs: one lane, one thread.
        local_engine=1,
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/n2g/n2g.py"
