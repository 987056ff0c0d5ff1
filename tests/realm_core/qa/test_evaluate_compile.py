"""`evaluate.compile`: the stage with Inductor-compiled readers scores a user's file as the eager
stage does, and its metrics say the readers were compiled (test_ask's tiny fine-tuned project)."""

from __future__ import annotations

import json

from realm_core.config import EvaluateConfig
from realm_core.qa.evaluate import run_evaluate
from tests.realm_core.modeling.test_reader import need_cxx
from tests.realm_core.qa.test_ask import QUESTION, project  # noqa: F401 - the module fixture

QUESTIONS = [(QUESTION, ["Dolly Parton"]), ("who sang i will always love you", ["Whitney Houston"]),
             ("when was the song released", ["1973"])]


def test_compiled_evaluate_gives_the_eager_predictions(project, tmp_path, monkeypatch):  # noqa: F811
    need_cxx()
    monkeypatch.chdir(project)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    runs, logs = {}, []
    for name in ("eager", "compiled"):
        cfg = EvaluateConfig(dataset="nq", methods=["orqa"], dataset_file=str(questions), ks=[1, 3], device="cpu",
                             precision="fp32", compile=name == "compiled", output_dir=str(tmp_path / name / "pred"),
                             metrics_dir=str(tmp_path / name / "metrics"))
        metrics = run_evaluate(cfg, info=logs.append)
        records = json.loads((tmp_path / name / "pred" / "nq" / "orqa.json").read_text())
        runs[name] = metrics, records
    (eager, eager_records), (compiled, compiled_records) = runs["eager"], runs["compiled"]
    assert "compiled" not in eager["orqa"] and compiled["orqa"]["compiled"] is True
    assert any(line.startswith("orqa: reader compiled in") for line in logs), logs
    for key in ("n_questions", "em", "recall@1", "recall@3", "reader_oracle"):
        assert compiled["orqa"][key] == eager["orqa"][key], key
    assert len(compiled_records) == len(QUESTIONS)
    for got, want in zip(compiled_records, eager_records):
        assert got["prediction"] == want["prediction"] and abs(got["score"] - want["score"]) < 1e-3
        assert [c["id"] for c in got["ctxs"]] == [c["id"] for c in want["ctxs"]]
