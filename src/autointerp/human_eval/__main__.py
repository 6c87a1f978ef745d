"""Command line: ``python -m autointerp.human_eval {prepare,init,serve,progress,export,table5}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autointerp.human_eval.store import StudyError, export_ratings, init_rating_db, prepare_study, progress, table5


PAPER_ORDER = ["Original", "Summary", "Highlight", "HighlightSummary", "AVHS"]  # Table 5's row order


def _neuron(text: str) -> tuple[int, int]:
    try:
        layer, neuron = text.split(":")
        return int(layer), int(neuron)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER:NEURON, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autointerp.human_eval",
                                     description="Blinded human evaluation of neuron explanations (Table 5).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build a study database from records and explanations")
    p.add_argument("--records", required=True, help="records Parquet (.../records/{set}.parquet)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--explanations", nargs="+", help="one explanations JSONL per format")
    src.add_argument("--explanations-dir", help="a folder .../explanations/{set}/{explainer}: every *.jsonl "
                                                 "except *.failures.jsonl")
    p.add_argument("--explainer", help="explainer name (default: the name of --explanations-dir)")
    p.add_argument("--study-name", required=True)
    p.add_argument("--seed", type=int, default=0, help="study seed: per-rater orders derive from it (default 0)")
    p.add_argument("--sample", type=int, default=0, help="which explanation sample to show (default 0)")
    p.add_argument("--neuron", action="append", type=_neuron, metavar="LAYER:NEURON",
                   help="restrict to these neurons (repeatable)")
    p.add_argument("--max-items", type=int, help="keep a seeded random subset of this many neurons")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study file")
    p.add_argument("--out", required=True, help="the study database to create (.sqlite)")

    p = sub.add_parser("init", help="create a rating database from a study template (or add a newer template's "
                                    "new neurons to it); never overwrites or changes ratings")
    p.add_argument("--template", required=True, help="the workflow's results/…/human_eval/{set}/{explainer}"
                                                     ".template.sqlite (or any study file)")
    p.add_argument("--db", required=True, help="the rating database, outside results/ (e.g. human_eval/NAME.sqlite)")
    p.add_argument("--study-name", help="name of a NEW rating database's study (default: the template's)")

    p = sub.add_parser("serve", help="serve the rating web app")
    p.add_argument("--db", required=True, help="the rating database (never a template)")
    p.add_argument("--template", help="first run `init --template TEMPLATE --db DB`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--secure-cookies", action="store_true", help="mark the session cookie Secure (behind HTTPS)")
    p.add_argument("--allowed-host", action="append", help="Host header names to accept (default: loopback names "
                                                           "when bound to loopback, else any)")
    p.add_argument("--quiet", action="store_true", help="no request log")

    p = sub.add_parser("progress", help="items done per rater")
    p.add_argument("--db", required=True)

    p = sub.add_parser("export", help="export ratings with the hidden format labels (analysis only)")
    p.add_argument("--db", required=True)
    p.add_argument("--out", required=True, help=".csv or .parquet")

    p = sub.add_parser("table5", help="mean rating ± SEM and %% chosen best per explainer and format")
    p.add_argument("inputs", nargs="+", help="study databases and/or exported ratings")
    p.add_argument("--out", required=True, help="CSV to write")
    return parser


def _init(template, db, study_name=None) -> None:
    info = init_rating_db(template, db, study_name=study_name)
    kept = info["kept_not_in_template"]
    print(f"{info['db']}: {'created' if info['created'] else 'updated'}; {info['items']} neurons "
          f"({info['added']} new{f', {kept} kept that the template no longer lists' if kept else ''}), "
          f"{info['raters']} rater(s)", flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            if args.explanations_dir:
                folder = Path(args.explanations_dir)
                files = sorted((p for p in folder.glob("*.jsonl") if not p.name.endswith(".failures.jsonl")),
                               key=lambda p: (PAPER_ORDER.index(p.stem) if p.stem in PAPER_ORDER else len(PAPER_ORDER),
                                              p.stem))
                explainer = args.explainer or folder.name
            else:
                files, explainer = [Path(p) for p in args.explanations], args.explainer
            if not explainer:
                print("error: --explainer is required with --explanations", file=sys.stderr)
                return 2
            summary = prepare_study(args.records, files, args.out, explainer=explainer, study_name=args.study_name,
                                    seed=args.seed, sample=args.sample, neurons=args.neuron,
                                    max_items=args.max_items, overwrite=args.overwrite)
            print(f"{summary['db']}: {summary['items']} neurons × {len(summary['formats'])} formats "
                  f"({', '.join(summary['formats'])})")
            for s in summary["skipped"]:
                print(f"  skipped layer {s['layer']} neuron {s['neuron']}: no explanation in "
                      f"{', '.join(s['missing_formats'])}")
        elif args.command == "init":
            _init(args.template, args.db, args.study_name)
        elif args.command == "serve":
            from autointerp.human_eval.web import serve

            if args.template:
                _init(args.template, args.db)
            serve(args.db, args.host, args.port, secure_cookies=args.secure_cookies,
                  allowed_hosts=args.allowed_host, quiet=args.quiet)
        elif args.command == "progress":
            for row in progress(args.db):
                print(f"{row['done']:>4} / {row['assigned']:<4} {row['rater']}")
        elif args.command == "export":
            n = export_ratings(args.db, args.out)
            print(f"{args.out}: {n} ratings")
        elif args.command == "table5":
            rows = table5(args.inputs, args.out)
            for r in rows:
                print(f"{r['explainer']:<16} {r['format']:<18} {r['mean']:.3f} ± {r['sem']:.3f}  "
                      f"best {r['pct_best']:.2f} %  (n={r['n_ratings']})")
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
