"""Human ratings survive the workflow: rule prepare_human_study writes a study template (a rule output); ratings
live in a rating database under human_eval/, which no rule writes. Forcing the rule to rerun, or changing a
human_eval parameter, rebuilds the template and leaves every rating and Table 5 as they were."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from fake_simulator import simulator_script
from loopback_server import LoopbackServer
from workflow_utils import loopback_roles, make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow

TEMPLATE = "results/smol/pydocs/human_eval/rnd/loop.template.sqlite"
RATED = "human_eval/rnd-loop.sqlite"
FORMATS = ["Original", "Summary"]


def _snakemake_ok(work, *args):
    proc = snakemake(work, "--cores", "2", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _set_human_eval(work, **values):
    path = work / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["human_eval"] = {**(config.get("human_eval") or {}), **values}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _ratings(db) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return (conn.execute("SELECT r.name, i.layer, i.neuron, e.format, e.text, x.score, x.rated_at FROM ratings x "
                             "JOIN raters r ON r.id = x.rater_id JOIN explanations e ON e.id = x.explanation_id "
                             "JOIN items i ON i.id = e.item_id ORDER BY 1, 2, 3, 4").fetchall()
                + conn.execute("SELECT r.name, i.layer, i.neuron, e.format, b.chosen_at FROM best_choices b "
                               "JOIN raters r ON r.id = b.rater_id JOIN explanations e ON e.id = b.explanation_id "
                               "JOIN items i ON i.id = b.item_id ORDER BY 1, 2, 3").fetchall())


def _template_items(path) -> list[tuple[int, int]]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT layer, neuron FROM items ORDER BY id").fetchall()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ratings_survive_reruns_of_the_preparing_rule(tmp_path, embedded_model_dir):
    from autointerp.human_eval.__main__ import main
    from autointerp.human_eval.store import assignment, connect, get_or_create_rater, record_item

    with LoopbackServer(script=simulator_script) as server:
        loop = loopback_roles(server.base_url)["explainers"]["loop"]
        config = tiny_config(neuron_sets={"rnd": {"kind": "random", "total": 3}},
                             prompt_formats={f: {} for f in FORMATS}, explainers={"loop": loop})
        work = make_workdir(tmp_path, config, embedded_model_dir)

        # no rule can produce anything under human_eval/: the rating databases are nobody's output
        proc = snakemake(work, "-n", "--cores", "1", "human_eval/anything.sqlite")
        assert proc.returncode != 0 and "No rule to produce human_eval/anything.sqlite" in proc.stdout + proc.stderr

        _snakemake_ok(work, TEMPLATE)
        template, rated = work / TEMPLATE, work / RATED
        with pytest.raises(Exception, match="study template"):  # the rule output itself cannot be rated
            connect(template)
        assert main(["init", "--template", str(template), "--db", str(rated)]) == 0

        conn = connect(rated)
        for name, base in (("Ada", 5), ("Bo", 2)):
            rater = get_or_create_rater(conn, name)
            pages = assignment(conn, rater["id"])
            assert len(pages) == 3 and all(len(p["order"]) == len(FORMATS) for p in pages)
            for i, page in enumerate(pages):
                first = page["order"][0]
                record_item(conn, rater["id"], page["item_id"],
                            {e: (base if e == first else 1 + (i + j) % 5) for j, e in enumerate(page["order"])},
                            page["order"][i % len(FORMATS)])
        conn.close()
        ratings = _ratings(rated)
        assert len(ratings) == 2 * 3 * len(FORMATS) + 2 * 3

        _set_human_eval(work, ratings=[RATED])
        _snakemake_ok(work, "results/table5.csv")
        table5 = work / "results" / "table5.csv"
        table5_bytes = table5.read_bytes()
        assert table5_bytes.count(b"\n") == 1 + len(FORMATS)

        # 1. force the preparing rule (and Table 5) to rerun: the template is rebuilt, nothing else changes
        before = _digest(rated), template.stat().st_ino, template.stat().st_mtime_ns
        proc = _snakemake_ok(work, TEMPLATE, "results/table5.csv", "--forcerun", "prepare_human_study", "table5")
        assert "prepare_human_study" in proc.stderr and "table5" in proc.stderr
        assert (template.stat().st_ino, template.stat().st_mtime_ns) != before[1:]
        assert _ratings(rated) == ratings and _digest(rated) == before[0]
        assert table5.read_bytes() == table5_bytes
        assert main(["init", "--template", str(template), "--db", str(rated)]) == 0  # the same items: no change
        assert _ratings(rated) == ratings

        # 2. a changed human_eval parameter reruns the rule with another draw; init adds, never deletes
        _set_human_eval(work, max_items=2, seed=5)
        proc = _snakemake_ok(work, TEMPLATE, "results/table5.csv", "--forcerun", "table5")
        assert "prepare_human_study" in proc.stderr
        assert len(_template_items(template)) == 2
        assert main(["init", "--template", str(template), "--db", str(rated)]) == 0
        assert _ratings(rated) == ratings
        _snakemake_ok(work, "results/table5.csv", "--forcerun", "table5")
        assert table5.read_bytes() == table5_bytes

        # 3. ratings under results/ (the workflow's outputs) are refused at start-up
        _set_human_eval(work, ratings=[TEMPLATE])
        proc = snakemake(work, "-n", "--cores", "1", "results/table5.csv")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "config['human_eval']['ratings'][0]" in out and "results/" in out
