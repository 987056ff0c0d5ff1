"""`realm ask`: a free question answered by a hand-built tiny fine-tuned model, and its errors.

The fixture lays out a project like the pipeline's (models/qa/nq/orqa with retriever/, reader/,
qa.json naming a relative index root; artifacts/corpus/{blocks.parquet,wordpieces};
artifacts/index/ict) with tiny scratch models, so the defaults are exercised from its root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from realm_core.ask import find_model_dir, snippet
from realm_core.cli import main
from realm_core.errors import RealmError
from tests.conftest import ROOT
from tests.realm_core.training.ict_fixture import TINY_BERT, write_blocks

QUESTION = "who wrote the song i will always love you"


def tiny_reader(tokenizer):
    import torch
    from transformers import BertModel

    from realm_core.modeling.reader import SpanReader
    from realm_core.pretrained import scratch_bert_config

    torch.manual_seed(0)
    bert = BertModel(scratch_bert_config(tokenizer, TINY_BERT, max_positions=128), add_pooling_layer=False)
    return SpanReader(bert, tokenizer, init="scratch", span_hidden=8, max_span_width=4, seq_len=128,
                      max_question_len=16)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tokenizer) -> Path:
    from realm_core.qa.evaluate import QA_FORMAT
    from realm_core.qa.wordpieces import build
    from realm_core.retrieval import embed, index
    from realm_core.training.qa_stage import save_qa
    from tests.realm_core.training.realm_fixture import TOKENIZER, tiny_retriever

    root = tmp_path_factory.mktemp("project")
    corpus = root / "artifacts" / "corpus"
    corpus.mkdir(parents=True)
    blocks = write_blocks(corpus / "blocks.parquet", 12)
    build(blocks, tokenizer, corpus / "wordpieces", tokenizer_name=TOKENIZER)
    models = root / "models"
    retriever = tiny_retriever()
    retriever.save_pretrained(models / "ict")
    index_root = root / "artifacts" / "index" / "ict"
    embed.embed_corpus(blocks, models / "ict", index_root / "embeddings", rows_per_shard=8, batch_size=8)
    index.build_index_version(index_root / "embeddings", index_root)
    encoder_hash = index.load_current(index_root).meta["embeddings"]["encoder_hash"]
    record = {"format": QA_FORMAT, "dataset": "nq", "method": "orqa", "retriever_init": "models/ict",
              "reader_init": "scratch", "index": "artifacts/index/ict", "index_encoder_hash": encoder_hash,
              "retriever_beam": 3, "reader_beam": 3, "query_len": 16, "best_step": 0, "dev_em": 0.0}
    save_qa(SimpleNamespace(retriever=retriever, reader=tiny_reader(tokenizer)), models / "qa" / "nq" / "orqa", record)
    return root


def ask_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["ask", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_ask_prints_the_answer_and_evidence(project, capsys, monkeypatch):
    monkeypatch.chdir(project)  # every default path is relative to the current directory
    code, out, err = ask_main(capsys, QUESTION)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Answer: ") and "(score " in lines[0] and lines[0] != "Answer: (none found)"
    assert lines[1] == "Model:  orqa on nq (models/qa/nq/orqa; dev EM 0.000 at step 0)"
    evidence = [line for line in lines if line[:5].strip().rstrip(".").isdigit()]
    assert len(evidence) == 5  # --k 5; the reader beam is 3
    assert all("p(z|x)" in line for line in evidence[:3]) and all("not read" in line for line in evidence[3:])
    assert sum("<- answer" in line for line in evidence) == 1


def test_json_output_has_every_key_and_nothing_else_on_stdout(project, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # elsewhere: explicit paths; the relative index is found from the models dir
    corpus = project / "artifacts" / "corpus"
    code, out, err = ask_main(capsys, "who", "wrote", "the", "song?", "--json", "--k", "4", "--device", "cpu",
                              "--models-dir", str(project / "models" / "qa"), "--method", "orqa",
                              "--wordpieces", str(corpus / "wordpieces"), "--blocks", str(corpus / "blocks.parquet"))
    assert code == 0, err
    result = json.loads(out)
    assert {"question", "answer", "score", "method", "model_dir", "evidence"} <= set(result)
    assert result["question"] == "who wrote the song?" and result["method"] == "orqa" and result["answer"]
    assert result["model_dir"] == str(project / "models" / "qa" / "nq" / "orqa") and result["dev_em"] == 0.0
    evidence = result["evidence"]
    assert [e["rank"] for e in evidence] == [1, 2, 3, 4]
    for e in evidence:
        assert set(e) == {"rank", "id", "title", "snippet", "score", "p_z"} and e["title"] and e["snippet"]
        assert len(e["snippet"]) <= 202
    assert [e["p_z"] is None for e in evidence] == [False, False, False, True]
    assert abs(sum(e["p_z"] for e in evidence[:3]) - 1) < 1e-3
    assert evidence == sorted(evidence, key=lambda e: -e["score"])
    rank = result["answer_rank"]
    assert result["answer"].lower() in evidence[rank - 1]["snippet"].lower()


def test_console_script_runs_as_a_module(project):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "realm_core.cli", "ask", QUESTION, "--k", "2", "--device", "cpu"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Answer: ") and "  1. " in proc.stdout and "  2. " in proc.stdout
    assert "  3. " not in proc.stdout


def test_no_trained_model_is_one_line_naming_the_directory(tmp_path, capsys):
    missing = tmp_path / "models" / "qa"
    code, out, err = ask_main(capsys, QUESTION, "--models-dir", str(missing))
    line = one_error_line(err)
    assert code == 1 and not out
    assert str(missing / "nq") in line and "dvc repro finetune_qa" in line


@pytest.mark.parametrize("question", ["", "   \t "])
def test_empty_question_is_one_line(question, capsys):
    code, out, err = ask_main(capsys, question)
    assert code == 1 and not out and "empty question" in one_error_line(err)


def test_unknown_dataset_method_and_missing_corpus_are_one_line(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, _, err = ask_main(capsys, QUESTION, "--dataset", "squad")
    assert code == 1 and "unknown dataset 'squad'" in one_error_line(err)
    code, _, err = ask_main(capsys, QUESTION, "--method", "realm")
    line = one_error_line(err)
    assert code == 1 and "models/qa/nq/realm" in line and "orqa" in line
    code, _, err = ask_main(capsys, QUESTION, "--wordpieces", "nowhere/wordpieces")
    assert code == 1 and "nowhere/wordpieces" in one_error_line(err)
    code, _, err = ask_main(capsys, QUESTION, "--blocks", "nowhere.parquet")
    assert code == 1 and "nowhere.parquet" in one_error_line(err)
    code, _, err = ask_main(capsys, QUESTION, "--k", "0")
    assert code == 1 and "--k" in one_error_line(err)
    code, _, err = ask_main(capsys)  # no question: a usage error, one line too
    assert code == 1 and "question" in one_error_line(err)
    assert main([]) == 1 and "ask" in capsys.readouterr().err  # no subcommand: the help, on stderr


def test_newest_method_is_the_latest_qa_json(tmp_path):
    root = tmp_path / "qa" / "wq"
    for name, mtime in [("realm", 1), ("orqa", 1000), ("bm25_bert_reader", 2)]:
        (root / name).mkdir(parents=True)
        (root / name / "qa.json").write_text("{}")
        os.utime(root / name / "qa.json", (mtime, mtime))
    (root / "in_progress").mkdir()  # no qa.json: not a model
    assert find_model_dir(tmp_path / "qa", "wq").name == "orqa"
    assert find_model_dir(tmp_path / "qa", "wq", "realm").name == "realm"
    with pytest.raises(RealmError, match="in_progress.*trained for wq: bm25_bert_reader, orqa, realm"):
        find_model_dir(tmp_path / "qa", "wq", "in_progress")


def test_snippet_centres_on_the_answer():
    text = "Intro words. " * 30 + "The prize went to Wilhelm Conrad Röntgen in 1901. " + "More text here. " * 30
    cut = snippet(text, "wilhelm conrad röntgen")
    assert "Wilhelm Conrad Röntgen" in cut and cut.startswith("…") and cut.endswith("…") and len(cut) <= 202
    assert snippet(text, "absent answer").startswith("Intro words.")
    assert snippet("short  text\n", "x") == "short text"


def test_a_question_without_answers_has_an_empty_gold(project, tokenizer):
    from realm_core.qa.datasets import QAExample
    from realm_core.qa.gold import GoldFinder
    from realm_core.qa.wordpieces import WordpieceCorpus
    from realm_core.training.qa_stage import read_texts

    corpus = WordpieceCorpus(project / "artifacts" / "corpus" / "wordpieces")
    finder = GoldFinder(corpus, read_texts(project / "artifacts" / "corpus" / "blocks.parquet"), tokenizer)
    gold = finder.find(QAExample(qid="ask", question=QUESTION, answers=[], answer_type="text"))
    assert not gold.rows and gold.spans(0) == [] and not gold.has_answer([0, 1, 2]).any()
