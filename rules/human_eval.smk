# Blinded human evaluation (Table 5). This rule writes a study TEMPLATE (blinded items, no raters): a rule output
# that any rerun may replace. Ratings never live in results/: `python -m autointerp.human_eval init --template
# <template> --db human_eval/<name>.sqlite` creates a rating database in human_eval/, a folder no rule writes,
# and human_eval.ratings lists those files for Table 5 (rule table5 in rules/tables.smk). docs/human_eval.md.

from autointerp.human_eval.stage import HumanEvalSettings


rule prepare_human_study:
    input:
        records=f"{R}/{{subject}}/{{corpus}}/records/{{neuron_set}}.parquet",
        explanations=study_explanation_files,
    output:
        f"{R}/{{subject}}/{{corpus}}/human_eval/{{neuron_set}}/{{explainer}}.template.sqlite",
    params:
        settings=stage_settings(HumanEvalSettings),
    log:
        f"{LOGS}/{{subject}}/{{corpus}}/human_eval/{{neuron_set}}/{{explainer}}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/human_eval/prepare_human_study.py"
