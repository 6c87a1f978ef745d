# Blinded human evaluation (Table 5): a study prepared from a finished run, rated in the web app
# (python -m autointerp.human_eval serve --db …), and Table 5 from the configured rating files.


rule prepare_human_study:
    input:
        records="results/{subject}/{corpus}/records/{neuron_set}.parquet",
        explanations=study_explanation_files,
    output:
        "results/{subject}/{corpus}/human_eval/{neuron_set}/{explainer}.sqlite",
    params:
        seed=HUMAN_EVAL.get("seed", 0),
        max_items=HUMAN_EVAL.get("max_items"),
    log:
        "logs/{subject}/{corpus}/human_eval/{neuron_set}/{explainer}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/human_eval/prepare_human_study.py"
