# The report: plots, one static HTML page per neuron with an index (tables, sortable neuron list, plots), and the
# export of explanations with every per-neuron score. Marked report() so `snakemake --report report.zip` holds
# the tables, the plots and the browsable pages. Local, cheap jobs that read finished stage files only.

from autointerp.report.plots import PLOTS  # noqa: E402
from autointerp.report.settings import ReportSettings  # noqa: E402

PLOT_FILES = {name: f"{R}/plots/{name}.svg" for name in PLOTS}


report: "../report/workflow.rst"


rule report_plots:
    input:
        unpack(run_data_inputs),
        table1=f"{R}/table1.csv",
    output:
        **{
            name: report(path, category="Plots", caption=f"../report/{name}.rst")
            for name, path in PLOT_FILES.items()
        },
    params:
        settings=stage_settings(ReportSettings),
    log:
        f"{LOGS}/report/plots.log",
    benchmark:
        f"{BENCH}/report/plots.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/report/report_plots.py"


rule neuron_pages:
    input:
        unpack(run_data_inputs),
        simulations=simulation_files,
        method_graphs=n2g_files("graphs"),
        plots=list(PLOT_FILES.values()),
        tables=report_tables,
    output:
        site=report(
            directory(f"{R}/report"),
            htmlindex="index.html",
            category="Neurons",
            caption="../report/neurons.rst",
        ),
    params:
        settings=stage_settings(ReportSettings),
    log:
        f"{LOGS}/report/neuron_pages.log",
    benchmark:
        f"{BENCH}/report/neuron_pages.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/report/neuron_pages.py"


rule export:
    # `snakemake --cores 8 export`: one file set per neuron set (docs/data_contracts.md, "Export").
    input:
        unpack(run_data_inputs),
    output:
        parquet=expand(f"{R}/export/{{neuron_set}}.parquet", neuron_set=NEURON_SETS),
        jsonl=expand(f"{R}/export/{{neuron_set}}.jsonl", neuron_set=NEURON_SETS),
        description=expand(f"{R}/export/{{neuron_set}}.json", neuron_set=NEURON_SETS),
    params:
        settings=stage_settings(ReportSettings),
    log:
        f"{LOGS}/report/export.log",
    benchmark:
        f"{BENCH}/report/export.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/report/export.py"
