"""The report stage on a small synthetic run: neuron pages (escaping, shading, links, CSP), the index, the export
and the plots. The workflow and the browser check the same on a real run (tests/test_workflow.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from autointerp.report.data import RunData
from autointerp.report.settings import ReportSettings
from autointerp.tables.settings import Statistics

FORMATS = ["Original", "Summary"]
NEURONS = [(3, 7), (5, 2)]
EVIL_TOKEN = '<script>alert("tok")</script>'
EVIL_EXPLANATION = '<img src=x onerror=alert(1)> & "quotes" </td></table>'


def settings(**kw) -> ReportSettings:
    base = dict(subject_model="embedded:test", formats=FORMATS, comparison_methods=["N2G"], baseline_format="Original",
                explainer_models={"ex": "ex-model"}, simulator_models={"sim": "sim-model"}, embedder_model=None,
                statistics=Statistics(n_boot=200, seed=0, confidence_level=0.95, alpha=0.05))
    return ReportSettings(**{**base, **kw})


def tokens_of(layer, neuron, record):
    return [f" w{layer}{neuron}{record}", EVIL_TOKEN, "\n", " & ", " end"]


def acts_of(record):
    return [0.0, 2.0, 1.0 * record / 10, float("nan") if record == 3 else -0.5, 1.0]


def synthetic_run() -> RunData:
    """Two neurons, two formats, one explainer and simulator, N2G: values chosen so each can be checked."""
    neurons = pl.DataFrame({"neuron_set": ["s", "s"], "layer": [3, 5], "neuron": [7, 2], "order": [0, 1]},
                           schema_overrides={"layer": pl.Int32, "neuron": pl.Int32, "order": pl.Int32})
    records, sims, expl, scores, prompts = [], [], [], [], []
    for layer, neuron in NEURONS:
        for split, n in (("train", 2), ("valid", 4)):
            for pos in range(n):
                records.append({"neuron_set": "s", "layer": layer, "neuron": neuron, "split": split, "position": pos,
                                "source": "top" if pos < 2 else "random", "source_rank": pos, "excerpt_id": 100 + pos,
                                "tokens": tokens_of(layer, neuron, pos), "activations": acts_of(pos),
                                "max_activation": 2.0, "cutoff": 1.5, "cutoff_quantile": 0.99})
        for fi, fmt in enumerate(FORMATS):
            text = EVIL_EXPLANATION if fmt == "Summary" else f"words like w{layer}"
            expl.append({"neuron_set": "s", "explainer": "ex", "format": fmt, "layer": layer, "neuron": neuron,
                         "sample": 0, "explanation": text, "model": "ex-model", "completion_tokens": 7})
            prompts.append({"neuron_set": "s", "explainer": "ex", "format": fmt, "layer": layer, "neuron": neuron,
                            "prompt_tokens": 1000 + 100 * fi + layer})
            for metric, value in (("simulation", 0.1 * layer + fi), ("simulation_top", 0.5), ("simulation_random",
                                                                                               math.nan)):
                scores.append({"neuron_set": "s", "layer": layer, "neuron": neuron, "explainer": "ex", "format": fmt,
                               "sample": 0, "metric": metric, "scorer": "sim", "value": value})
            for rec in range(4):
                for p in range(5):
                    sims.append({"layer": layer, "neuron": neuron, "sample": 0, "record": rec, "position": p,
                                 "expected_value": None if p == 4 else 10.0 * (p == 1) + fi,
                                 "flag": "unaligned" if p == 4 else "ok", "neuron_set": "s", "explainer": "ex",
                                 "simulator": "sim", "format": fmt})
    i32 = {c: pl.Int32 for c in ("layer", "neuron", "sample", "position", "source_rank", "record")}
    stats = pl.DataFrame({"layer": [3, 5], "neuron": [7, 2], "max_activation": [2.0, 2.0],
                          "quantiles": [[0.1, 0.5], [0.2, 0.6]], "mean": [0.01, 0.02], "variance": [0.04, 0.09]},
                         schema_overrides={"layer": pl.Int32, "neuron": pl.Int32})
    methods = pl.DataFrame({"neuron_set": ["s", "s"], "method": ["N2G", "N2G"], "layer": [3, 5], "neuron": [7, 2],
                            "explanation": ['tokens "<b>"', "no pattern"], "score": [0.4, 0.3],
                            "score_top": [0.5, 0.2], "score_random": [math.nan, 0.1], "firing_precision": [1.0, 0.5],
                            "firing_recall": [0.5, 0.5], "firing_f1": [2 / 3, 0.5]},
                           schema_overrides={"layer": pl.Int32, "neuron": pl.Int32})

    def frame(rows):
        df = pl.DataFrame(rows)
        return df.with_columns(*(pl.col(c).cast(t) for c, t in i32.items() if c in df.columns))

    return RunData(neurons=neurons, records=frame(records), stats=stats, quantile_levels=[0.5, 0.99],
                   explanations=frame(expl), scores=frame(scores), simulations=frame(sims), methods=methods,
                   prompt_tokens=frame(prompts))


class Page(HTMLParser):
    """What a browser would see: scripts, the CSP, images, links, the text of each shaded excerpt."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.scripts, self.styles, self.csp, self.imgs, self.links, self.texts = [], [], "", [], [], []
        self.excerpts: list[list[dict]] = []
        self.attrs_seen: list[tuple[str, dict]] = []
        self._in, self._span_depth, self._token = None, 0, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs_seen.append((tag, a))
        if tag in ("script", "style"):
            self._in = tag
        elif tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"]
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.links.append(a.get("href"))
        elif tag == "p" and "excerpt" in (a.get("class") or "").split():
            self.excerpts.append([])
        elif tag == "span" and self.excerpts and "t" in (a.get("class") or "").split():
            self._token = {"class": a["class"].split(), "title": a.get("title"), "text": ""}
            self.excerpts[-1].append(self._token)
        elif tag == "span" and self._token is not None:
            self._token = dict(self._token, _value=True)  # the value label inside a token: not token text
            self.excerpts[-1][-1]["_in_value"] = True

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None
        if tag == "span" and self.excerpts and self.excerpts[-1] and self.excerpts[-1][-1].get("_in_value"):
            self.excerpts[-1][-1]["_in_value"] = False
            self.excerpts[-1][-1]["_done"] = True

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)
        else:
            self.texts.append(data)
            if self.excerpts and self.excerpts[-1]:
                tok = self.excerpts[-1][-1]
                if not tok.get("_in_value") and not tok.get("_done"):
                    tok["text"] += data


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from autointerp.report.pages import Report

    out = tmp_path_factory.mktemp("site") / "report"
    result = Report(synthetic_run(), settings(), "test-run").write(out)
    return out, result


def test_pages_escape_untrusted_text_and_run_only_their_own_script(site):
    out, result = site
    assert result["neuron_pages"] == 2
    for path in [out / "index.html", *sorted((out / "s").glob("*.html"))]:
        html = path.read_text()
        page = Page(html)
        # exactly the page's own script and style, allowed by hash; nothing else may run
        assert len(page.scripts) == 1 and len(page.styles) == 1, path
        assert csp_hash(page.scripts[0]) in page.csp and csp_hash(page.styles[0]) in page.csp
        assert "default-src 'none'" in page.csp and "unsafe-inline" not in page.csp
        assert not any(k.startswith("on") for _, attrs in page.attrs_seen for k in attrs), path
        assert all(img.get("src", "").startswith(("plots/", "graphs/")) for img in page.imgs)
        assert "<script>alert" not in html and "<img src=x" not in html
    page = Page((out / "s" / "layer003_neuron00007.html").read_text())
    text = "".join(page.texts)
    assert EVIL_EXPLANATION in text  # shown as text, literally
    assert 'tokens "<b>"' in text  # N2G's text too
    # every shaded excerpt shows the record's tokens as text (line breaks as a visible mark)
    token_texts = [[t["text"] for t in ex] for ex in page.excerpts]
    assert [" w370", EVIL_TOKEN, "↵", " & ", " end"] in token_texts


def test_true_and_simulated_rows_are_shaded_with_values_on_hover(site):
    out, _ = site
    page = Page((out / "s" / "layer005_neuron00002.html").read_text())
    # 4 valid records x (true row + 2 formats' simulations) + 2 train records
    assert len(page.excerpts) == 4 * 3 + 2
    true_row = page.excerpts[0]  # valid record 0: activations 0, 2 (= max), 0, -0.5, 1
    assert [t["title"] for t in true_row] == ["activation 0.00", "activation 2.00", "activation 0.00",
                                              "activation -0.50", "activation 1.00"]
    assert "a10" in true_row[1]["class"] and "hi" in true_row[1]["class"]  # the maximum: darkest, bold
    assert not any(c.startswith("a") and c[1:].isdigit() for c in true_row[0]["class"])  # 0: unshaded
    assert "a5" in true_row[4]["class"] and "hi" in true_row[4]["class"]  # half the maximum: bold from here
    sim_original = page.excerpts[1]  # Original's simulation: 10 at position 1, 0 elsewhere, none at 4
    assert sim_original[1]["title"] == "simulated 10.00" and "a10" in sim_original[1]["class"]
    assert sim_original[4]["title"] == "simulated: no value" and "na" in sim_original[4]["class"]
    sim_summary = page.excerpts[2]  # Summary: everything 1 higher
    assert sim_summary[0]["title"] == "simulated 1.00" and "a1" in sim_summary[0]["class"]
    nan_record = page.excerpts[3 * 3]  # valid record 3 has a NaN activation at position 3
    assert nan_record[3]["title"] == "activation: no value" and nan_record[2]["title"] == "activation 0.30"


def test_scores_links_and_statistics(site):
    out, _ = site
    page = Page((out / "s" / "layer005_neuron00002.html").read_text())
    text = " ".join(page.texts)
    # simulation = 0.1 * layer + format index; simulation_random NaN shows as a dash, never as a number
    assert "0.500" in text and "1.500" in text and "—" in text
    assert "layer003_neuron00007.html" in page.links and "../index.html" in page.links  # previous neuron, index
    assert not any(link and "neuron00002" in link for link in page.links)  # no link to itself, no next
    assert "0.300" in text  # the standard deviation: sqrt(0.09)
    first = Page((out / "s" / "layer003_neuron00007.html").read_text())
    assert "layer005_neuron00002.html" in first.links


def test_index_lists_every_neuron_with_its_best_format(site):
    out, _ = site
    html = (out / "index.html").read_text()
    page = Page(html)
    assert {"s/layer003_neuron00007.html", "s/layer005_neuron00002.html"} <= set(page.links)
    rows = re.findall(r'<tr data-layer="(\d+)" data-best="([^"]*)">', html)
    assert rows == [("3", "Summary"), ("5", "Summary")]  # Summary = Original + 1 on every neuron


def test_export_has_one_row_per_explanation_and_method_with_every_score(tmp_path):
    from autointerp.report.export import write_export

    data = synthetic_run()
    written = write_export(data, settings(), {"s": str(tmp_path / "export" / "s.parquet")})
    table = pq.read_table(tmp_path / "export" / "s.parquet")
    rows = table.to_pylist()
    assert written == {"s": len(rows)} and len(rows) == len(NEURONS) * len(FORMATS) + len(NEURONS)  # + N2G
    for layer, neuron in NEURONS:
        for fi, fmt in enumerate(FORMATS):
            row = next(r for r in rows if (r["layer"], r["neuron"], r["format"]) == (layer, neuron, fmt))
            assert row["simulation[sim]"] == pytest.approx(0.1 * layer + fi)
            assert row["simulation_top[sim]"] == 0.5 and row["simulation_random[sim]"] != row["simulation_random[sim]"]
            assert row["prompt_tokens"] == 1000 + 100 * fi + layer and row["explainer_model"] == "ex-model"
            assert row["kind"] == "format" and row["method_score"] is None
        n2g = next(r for r in rows if (r["layer"], r["neuron"], r["format"]) == (layer, neuron, "N2G"))
        assert n2g["kind"] == "comparison" and n2g["explainer"] is None and n2g["simulation[sim]"] is None
        assert n2g["method_score"] == {3: 0.4, 5: 0.3}[layer]
    # self-describing: every column has a description, in the Parquet file and in the JSON beside it
    description = json.loads((tmp_path / "export" / "s.json").read_text())
    assert json.loads(table.schema.metadata[b"autointerp.export"]) == description
    assert set(description["columns"]) == set(table.schema.names)
    assert all(table.schema.field(n).metadata[b"description"] for n in table.schema.names)
    assert description["simulator_models"] == {"sim": "sim-model"} and description["rows"] == len(rows)
    lines = [json.loads(line) for line in (tmp_path / "export" / "s.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["format"], r["explanation"]) for r in lines] == [
        (r["layer"], r["format"], r["explanation"]) for r in rows]


def test_plots_are_svg_and_identical_for_identical_data(tmp_path):
    from autointerp.report.plots import PLOTS, write_plots

    table1 = tmp_path / "table1.csv"
    table1.write_text("neuron_set,explainer,format,n_neurons,mean_prompt_tokens,sem_prompt_tokens\n"
                      "s,ex,Original,2,1104,1\ns,ex,Summary,2,1204,1\n")
    runs = []
    for name in ("a", "b"):
        outputs = {p: str(tmp_path / name / f"{p}.svg") for p in PLOTS}
        write_plots(synthetic_run(), settings(), table1, outputs)
        runs.append({p: Path(path).read_bytes() for p, path in outputs.items()})
    assert runs[0] == runs[1]  # same config, same bytes (no date, fixed hash salt, seeded jitter)
    svg = runs[0]["paired_differences"].decode()
    assert svg.lstrip().startswith("<?xml") and "Summary" in svg and "format − Original" in svg
    assert "simulation[sim], explainer ex" in runs[0]["scores_by_format"].decode()


def test_plots_of_a_run_without_scores_say_so(tmp_path):
    from autointerp.report.plots import write_plots

    empty = synthetic_run()
    empty.scores = empty.scores.clear()
    path = tmp_path / "scores_by_format.svg"
    write_plots(empty, settings(), None, {"scores_by_format": str(path)})
    assert "no per-neuron scores in this run" in path.read_text()


def test_a_page_limit_keeps_the_first_neurons_and_says_so(tmp_path):
    from autointerp.report.data import read_records
    from autointerp.report.pages import Report

    data = synthetic_run()
    path = tmp_path / "s.parquet"
    data.records.drop("neuron_set").write_parquet(path)
    first = data.neurons.filter(pl.col("order") < 1)
    kept = read_records([str(path)], keep=first)
    assert set(kept.select("layer", "neuron").unique().rows()) == {(3, 7)} and kept.height == 6  # 2 train + 4 valid
    data.neurons, data.set_sizes = first, {"s": 2}
    Report(data, settings(max_pages_per_set=1), "limited").write(tmp_path / "site")
    assert [p.name for p in (tmp_path / "site" / "s").glob("*.html")] == ["layer003_neuron00007.html"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "1 of 2 neurons of set s" in index and "layer005_neuron00002" not in index
    assert "1 of 2 in set s" in (tmp_path / "site" / "s" / "layer003_neuron00007.html").read_text()
