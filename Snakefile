# autointerp: neuron activations -> explanation prompts -> explanations -> simulation -> scores -> tables.
# This file only includes the rule files; helpers live in rules/common.smk.

# A --configfile given on the command line is a complete config (e.g. config/presets/*.yaml); only without
# one is the default loaded, so presets never inherit the default's neuron sets by deep merge.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/extract.smk"
include: "rules/prompts.smk"
include: "rules/explain.smk"
include: "rules/simulate.smk"
include: "rules/classify.smk"
include: "rules/similarity.smk"
include: "rules/human_eval.smk"
include: "rules/n2g.smk"
include: "rules/tables.smk"
include: "rules/report.smk"
include: "rules/hooks.smk"


rule all:
    default_target: True
    input:
        all_targets(),
