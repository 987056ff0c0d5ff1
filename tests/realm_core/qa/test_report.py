"""The report stage's library: results.md's numbers are the inputs', the PNGs are real PNGs, and bad
or missing inputs are one RealmError naming the file (or a note, for the optional ones)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from realm_core.config import ReportConfig
from realm_core.errors import RealmError
from realm_core.qa.report import check_inputs, run_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COVERAGE = {"nq": 1.0, "wq": 0.5437, "ct": 0.8041}
N_QUESTIONS = {"nq": 530, "wq": 2032, "ct": 694}


def method(em: float, recall: float) -> dict:
    return {"em": em, "recall@1": round(recall * 0.6, 4), "recall@5": recall, "recall@20": round(recall * 1.1, 4),
            "recall@100": round(recall * 1.15, 4), "reader_oracle": round(recall * 0.9, 4),
            "em_answerable": round(em * 1.2, 4), "retriever": "models/qa/x/retriever", "reader": "models/qa/x/reader",
            "n_questions": 530}


# dataset -> method -> (em, recall@5): distinct values, so a table cell can only match its own input
EVAL = {
    "nq": {"orqa": (0.3123, 0.7012), "realm": (0.3456, 0.7234), "realm_retriever_bert_reader": (0.3321, 0.7111),
           "ict_retriever_realm_reader": (0.3234, 0.6987)},
    "wq": {"orqa": (0.1187, 0.2345), "realm": (0.1276, 0.2456)},
    "ct": {"orqa": (0.2012, 0.3912), "realm": (0.2198, 0.4087)},
}
RETRIEVAL = {"nq": {"bm25": 0.883, "ict": 0.7925, "realm": 0.7849},
             "wq": {"bm25": 0.1609, "ict": 0.1614, "realm": 0.1587},
             "ct": {"bm25": 0.2637, "ict": 0.2493, "realm": 0.2450}}
ABLATION_ROWS = {
    "realm": {"what": "REALM (salient spans, sync refresh)", "marginal_accuracy": 0.041, "null_accuracy": 0.0336,
              "baseline_accuracy": 0.0261, "ru_first": -0.003, "ru_last": 0.0501, "answer_in_candidates": 0.3203,
              "recall5": 0.7547},
    "random_tokens": {"what": "random uniform masks (BERT-style)", "marginal_accuracy": 0.0262,
                      "null_accuracy": 0.0187, "baseline_accuracy": 0.0261, "ru_first": -0.0031, "ru_last": 0.0261,
                      "answer_in_candidates": 0.3071, "recall5": 0.766},
}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def write_eval(root: Path, dataset: str, methods: dict[str, tuple[float, float]], **extra) -> Path:
    data = {"dataset": dataset, "split": "test", "n_questions": N_QUESTIONS[dataset],
            "answer_coverage": COVERAGE[dataset], "n_blocks": 7738, "methods": list(methods)}
    data.update({m: method(em, r5) for m, (em, r5) in methods.items()})
    return write_json(root / f"{dataset}.json", {**data, **extra})


def write_curve(path: Path, metric: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{metric}\n" + "".join(f"{10 * (i + 1)}\t{v}\n" for i, v in enumerate(values)))


def write_inputs(tmp: Path, ablation_format: str = "gpu", finetune: bool = True) -> ReportConfig:
    """A full synthetic set of report inputs under `tmp`; the config that reads them."""
    for d, methods in EVAL.items():
        extra = {}
        if d == "nq":
            extra["full_test"] = {"split": "full_test", "n_questions": 1485, "answer_coverage": 0.4012,
                                  "orqa": method(0.1111, 0.3333), "realm": method(0.1222, 0.3444)}
        write_eval(tmp / "eval", d, methods, **extra)
        write_json(tmp / "retrieval" / f"{d}.json",
                   {"dataset": d, "answer_coverage": COVERAGE[d], "n_questions": N_QUESTIONS[d], "n_blocks": 7738,
                    **{n: {"recall@1": r / 2, "recall@5": r, "recall@20": min(1.0, r * 1.1), "recall@100": 1.0}
                       for n, r in RETRIEVAL[d].items()}})
    if ablation_format == "gpu":  # scripts/realm_ablations_gpu.py: {"variants": {name: row with "nq": {...}}}
        variants = {n: {**{k: v for k, v in r.items() if k != "recall5"}, "completed": True,
                        "nq": {"recall@1": 0.5, "recall@5": r["recall5"]}} for n, r in ABLATION_ROWS.items()}
        abl = write_json(tmp / "docs" / "ablations_gpu.json",
                         {"what": "GPU ablations", "variants": variants, "skipped": ["random_spans"]})
    else:  # scripts/realm_ablations.py: {name: row with "nq_recall@5"}
        abl = write_json(tmp / "docs" / "ablations.json",
                         {n: {"name": n, **{k: v for k, v in r.items() if k != "recall5"}, "nq_recall@5": r["recall5"]}
                          for n, r in ABLATION_ROWS.items()})
    train = tmp / "pretrain_realm" / "plots" / "metrics" / "train"
    write_curve(train / "loss.tsv", "loss", [8.5, 8.1, 7.9, 7.6])
    write_curve(train / "retrieval_utility.tsv", "retrieval_utility", [0.01, -0.02, 0.04, 0.05])
    if finetune:
        for run in ("nq-orqa", "nq-realm", "wq-orqa"):
            write_curve(tmp / "finetune_qa" / run / "plots" / "metrics" / "train" / "loss.tsv", "loss", [3.0, 2.0, 1.5])
    return ReportConfig(eval_dir=str(tmp / "eval"), retrieval_dir=str(tmp / "retrieval"),
                        ablations=[str(tmp / "docs" / "missing.json"), str(abl)],
                        pretrain_dir=str(tmp / "pretrain_realm"), finetune_dir=str(tmp / "finetune_qa"),
                        output_dir=str(tmp / "reports"), dpi=60)


def table(text: str, heading: str, index: int = 0) -> str:
    """The `index`-th markdown table of the section whose heading starts with `heading`."""
    body = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"(?:^\|.*\n?)+", body, flags=re.MULTILINE)[index]


def row(text: str, first_cell: str) -> list[str]:
    """The cells after the first of the table row whose first cell is `first_cell` (exactly one such row)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, (first_cell, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")][1:]


QA, TABLE2, ABLATIONS, ZERO_SHOT = "Open-domain QA", "Retriever and reader", "Pre-training ablations", "Zero-shot"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = write_inputs(tmp)
    summary = run_report(cfg, info=lambda _: None)
    return cfg, summary, (tmp / "reports" / "results.md").read_text(encoding="utf-8")


def test_qa_table_holds_the_eval_numbers_beside_the_papers(report):
    _, summary, text = report
    assert summary["datasets"] == ["nq", "wq", "ct"]
    assert summary["methods"] == ["orqa", "realm", "realm_retriever_bert_reader", "ict_retriever_realm_reader"]
    for m in ("orqa", "realm"):
        expected = [c for d in ("nq", "wq", "ct") for c in (pct(EVAL[d][m][0]), pct(EVAL[d][m][1]))]
        assert row(table(text, QA), f"`{m}`") == expected
    assert row(table(text, QA), "`realm_retriever_bert_reader`") == ["33.2", "71.1", "—", "—", "—", "—"]
    assert row(table(text, QA), "answer coverage (ceiling)")[:6] == ["100.0", "100.0", "54.4", "54.4", "80.4", "80.4"]
    assert row(table(text, QA), "*paper:* ORQA") == ["33.3", "", "36.4", "", "30.1", ""]
    assert row(table(text, QA), "*paper:* REALM (X = Wikipedia)") == ["39.2", "", "40.2", "", "46.8", ""]
    assert row(table(text, QA), "*paper:* REALM (X = CC-News)") == ["40.4", "", "40.7", "", "42.9", ""]
    assert row(table(text, QA), "*paper:* BERT-Baseline (sparse retriever + transformer)") == ["26.5", "", "17.7", "", "21.3", ""]
    assert "Questions: NQ 530, WQ 2,032, CT 694." in text
    assert "7,738-block corpus" in text and "not comparable in absolute terms" in text
    assert "NQ-open full test (1,485 questions, answer coverage 40.1%)" in text
    # per-method details: EM, EM (answerable), reader oracle, R@1, R@5, R@20, R@100
    e = method(*EVAL["wq"]["realm"])
    assert f"| WQ | `realm` | {pct(e['em'])} | {pct(e['em_answerable'])} | " \
        f"{pct(e['reader_oracle'])} | {pct(e['recall@1'])} | {pct(e['recall@5'])} | {pct(e['recall@20'])} | " \
        f"{pct(e['recall@100'])} |" in text


def test_table2_rows_pair_eval_em_with_zero_shot_recall(report):
    _, _, text = report
    assert row(table(text, TABLE2), "REALM") == ["`realm`", pct(0.3456), f"{pct(0.7849)} (`realm`)", "38.2", "38.5"]
    assert row(table(text, TABLE2), "REALM retriever + Baseline encoder") == ["`realm_retriever_bert_reader`", "33.2",
                                                               f"{pct(0.7849)} (`realm`)", "37.4", "38.5"]
    assert row(table(text, TABLE2), "Baseline retriever + REALM encoder") == ["`ict_retriever_realm_reader`", "32.3",
                                                               f"{pct(0.7925)} (`ict`)", "35.3", "13.9"]
    assert row(table(text, TABLE2), "Baseline (ORQA)") == ["`orqa`", "31.2", f"{pct(0.7925)} (`ict`)", "31.3", "13.9"]


def test_zero_shot_table_holds_every_retriever(report):
    _, _, text = report
    for name in ("bm25", "ict", "realm"):
        assert row(table(text, ZERO_SHOT), f"`{name}`") == [pct(RETRIEVAL[d][name]) for d in ("nq", "wq", "ct")]


@pytest.mark.parametrize("fmt", ["gpu", "script"])
def test_ablation_table_reads_either_format(tmp_path, fmt):
    cfg = write_inputs(tmp_path, ablation_format=fmt, finetune=False)
    summary = run_report(cfg, info=lambda _: None)
    text = Path(summary["results"]).read_text()
    assert summary["ablations"] == [cfg.ablations[1]]
    assert row(table(text, ABLATIONS), "`realm`") == ["REALM (salient spans, sync refresh)", "4.1", "3.4", "2.6", "-0.003 → 0.050", "32.0",
                                    "75.5", "REALM: 38.2 / 38.5"]
    assert row(table(text, ABLATIONS), "`random_tokens`")[-2:] == ["76.6", "Random uniform masks: 32.3 / 24.2"]
    assert ("Not run: `random_spans`." in text) == (fmt == "gpu")


def test_every_ablation_file_is_its_own_table_with_its_device_and_budget(tmp_path):
    cfg = write_inputs(tmp_path, ablation_format="gpu", finetune=False)
    cpu = write_inputs(tmp_path / "cpu", ablation_format="script", finetune=False).ablations[1]
    scaled = write_json(tmp_path / "docs" / "scaled.json", {
        "what": "at params.yaml's budget", "device": "NVIDIA H100 80GB HBM3",
        "params": {"overrides": ["pretrain_realm.steps=600", "pretrain_realm.batch_size=32"]},
        "variants": {"realm": {"what": "REALM", "marginal_accuracy": 0.1027, "null_accuracy": 0.1053,
                               "baseline_accuracy": 0.0477, "ru_first": -0.0411, "ru_last": 0.05,
                               "answer_in_candidates": 0.2165, "nq": {"recall@5": 0.6943}}}})
    cfg = cfg.model_copy(update={"ablations": [cfg.ablations[1], str(scaled), str(tmp_path / "none.json"), cpu]})
    summary = run_report(cfg, info=lambda _: None)
    text = Path(summary["results"]).read_text()
    assert summary["ablations"] == [cfg.ablations[0], str(scaled), cpu]
    section = text.split("\n## Pre-training ablations", 1)[1].split("\n## ", 1)[0]
    assert [h for h in section.splitlines() if h.startswith("### ")] == [
        f"### `{cfg.ablations[0]}`", f"### `{scaled}` (NVIDIA H100 80GB HBM3)", f"### `{cpu}`"]
    assert "params.yaml's budget changed by `pretrain_realm.steps=600`, `pretrain_realm.batch_size=32`." in section
    assert "at params.yaml's budget" not in section  # the default-budget description is not shown for it
    assert row(table(text, ABLATIONS, 1), "`realm`") == ["REALM", "10.3", "10.5", "4.8", "-0.041 → 0.050", "21.6",
                                                         "69.4", "REALM: 38.2 / 38.5"]
    assert row(table(text, ABLATIONS, 2), "`realm`")[1] == "4.1"  # the CPU-format table, unchanged


def test_every_figure_is_a_png_linked_from_the_report(report):
    cfg, summary, text = report
    names = [Path(f).name for f in summary["figures"]]
    assert names == ["em.png", "recall_at_k.png", "pretrain_curves.png", "finetune_loss.png"]
    for f in summary["figures"]:
        data = Path(f).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
        with Image.open(f) as img:
            img.verify()
        assert f"]({Path(f).name})" in text
    # written atomically: no temporary siblings left behind
    assert sorted(p.name for p in Path(cfg.output_dir).iterdir()) == sorted(names + ["results.md"])


def test_missing_eval_file_is_one_error_naming_it(tmp_path):
    cfg = write_inputs(tmp_path, finetune=False)
    (tmp_path / "eval" / "wq.json").unlink()
    for call in (check_inputs, run_report):
        with pytest.raises(RealmError, match=re.escape(str(tmp_path / "eval" / "wq.json"))):
            call(cfg)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("target,content,expected", [
    ("eval/ct.json", "{not json", "invalid JSON"),
    ("eval/nq.json", "[1, 2]", "expected a JSON object"),
    ("eval/nq.json", '{"methods": "orqa"}', "'methods' must be a list"),
    ("retrieval/wq.json", "{", "invalid JSON"),
    ("pretrain_realm/plots/metrics/train/loss.tsv", "step\tloss\n10\tabc\n", "loss.tsv:2"),
    ("pretrain_realm/plots/metrics/train/loss.tsv", "loss\n1\n", "a 'step' column"),
])
def test_malformed_input_is_an_error_naming_the_file(tmp_path, target, content, expected):
    cfg = write_inputs(tmp_path, finetune=False)
    (tmp_path / target).write_text(content)
    with pytest.raises(RealmError, match=re.escape(str(tmp_path / target))) as err:
        run_report(cfg)
    assert expected in str(err.value)


def test_missing_method_entry_is_shown_not_fatal(tmp_path):
    cfg = write_inputs(tmp_path, finetune=False)
    data = json.loads((tmp_path / "eval" / "wq.json").read_text())
    data["methods"].append("bm25_bert_reader")  # listed, no entry
    (tmp_path / "eval" / "wq.json").write_text(json.dumps(data))
    text = Path(run_report(cfg, info=lambda _: None)["results"]).read_text()
    assert row(table(text, QA), "`bm25_bert_reader`") == ["—"] * 6
    assert "Listed in `methods` but absent from the metrics: `bm25_bert_reader` (WQ)." in text


def test_absent_optional_inputs_are_noted_and_stale_figures_removed(tmp_path):
    cfg = write_inputs(tmp_path, finetune=False)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "finetune_loss.png").write_bytes(PNG_MAGIC)  # from an earlier run that had fine-tuning curves
    cfg = cfg.model_copy(update={"retrieval_dir": str(tmp_path / "none"), "ablations": [str(tmp_path / "none.json")],
                                 "pretrain_dir": str(tmp_path / "none")})
    notes: list[str] = []
    summary = run_report(cfg, info=notes.append)
    assert [Path(f).name for f in summary["figures"]] == ["em.png", "recall_at_k.png"]
    assert sorted(p.name for p in out.iterdir()) == ["em.png", "recall_at_k.png", "results.md"]
    text = (out / "results.md").read_text()
    assert "No ablation table found." in text and "No zero-shot retrieval metrics under" in text
    assert f"No zero-shot retrieval metrics for WQ (`{tmp_path / 'none'}/wq.json`)." in text
    assert "No pre-training curve for loss, retrieval_utility" in text and "No fine-tuning curves" in text
    assert "## Retriever and reader combinations" in text  # EM still there, zero-shot R@5 missing
    assert row(table(text, TABLE2), "REALM")[2] == "— (`realm`)"
    assert any("No fine-tuning curves" in n for n in notes)


def test_config_rejects_unknown_datasets():
    with pytest.raises(ValueError, match="distinct datasets among nq, wq, ct"):
        ReportConfig(datasets=["nq", "squad"])
    with pytest.raises(ValueError):
        ReportConfig(datasets=[])
