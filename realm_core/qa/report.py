"""The `report` stage: `results.md` and the PNGs it embeds, from the metrics the pipeline wrote.

Inputs (paths from ReportConfig):
- `<eval_dir>/<dataset>.json` of the evaluate stage: EM and Recall@k per fine-tuned method, listed
  in its "methods" (a missing file is an error; a listed method without its entry is shown as
  missing); for nq optionally a "full_test" entry of the same kind.
- `<retrieval_dir>/<dataset>.json` of evaluate_retrieval: zero-shot Recall@k per retriever.
- every existing file of `ablations`: one pre-training ablation table each (runs on different
  devices or budgets are not one table), either scripts/realm_ablations.py's {variant: row} or the
  GPU script's {"variants": {variant: row}, "device": ..., "params": {"overrides": [...]}, ...}.
- dvclive curves: `<pretrain_dir>/plots/metrics/train/<metric>.tsv` and, per fine-tuning run,
  `<finetune_dir>/<dataset>-<method>/plots/metrics/train/loss.tsv`.
The paper's figures are REALM's Tables 1 and 2 (constants below). Optional inputs that are absent
are noted in the report; a malformed input is a RealmError naming the file.

Outputs in `output_dir`: results.md and its PNGs (relative links), each written to a temporary
sibling and renamed; the markdown last, so it never links a figure that is not there.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from realm_core.config import ReportConfig
from realm_core.errors import RealmError
from realm_core.io import atomic_path, write_text_atomic

# Guu et al. 2020, "REALM: Retrieval-Augmented Language Model Pre-Training" (arXiv:2002.08909),
# Table 1: test exact match (%) on NQ-open, WebQuestions and CuratedTREC.
PAPER_TABLE1: list[tuple[str, dict[str, float]]] = [
    ("BERT-Baseline (sparse retriever + transformer)", {"nq": 26.5, "wq": 17.7, "ct": 21.3}),
    ("ORQA", {"nq": 33.3, "wq": 36.4, "ct": 30.1}),
    ("REALM (X = Wikipedia)", {"nq": 39.2, "wq": 40.2, "ct": 46.8}),
    ("REALM (X = CC-News)", {"nq": 40.4, "wq": 40.7, "ct": 42.9}),
]

# Same paper, Table 2: NQ dev exact match (%) / zero-shot Recall@5 (%) of the pre-trained retriever.
# evaluate-stage method -> (paper row, EM, R@5, our zero-shot retriever in metrics/retrieval)
PAPER_TABLE2_METHODS: dict[str, tuple[str, float, float, str]] = {
    "realm": ("REALM", 38.2, 38.5, "realm"),
    "realm_retriever_bert_reader": ("REALM retriever + Baseline encoder", 37.4, 38.5, "realm"),
    "ict_retriever_realm_reader": ("Baseline retriever + REALM encoder", 35.3, 13.9, "ict"),
    "orqa": ("Baseline (ORQA)", 31.3, 13.9, "ict"),
}
# pre-training ablation variant (scripts/realm_ablations.py) -> (paper row, EM, R@5)
PAPER_TABLE2_ABLATIONS: dict[str, tuple[str, float, float]] = {
    "realm": ("REALM", 38.2, 38.5),
    "random_tokens": ("Random uniform masks", 32.3, 24.2),
    "random_spans": ("Random span masks", 35.3, 26.1),
    "stale_never": ("30× stale MIPS", 28.7, 15.1),
}

DATASET_NAMES = {"nq": "NQ", "wq": "WQ", "ct": "CT"}
TRAIN_CURVES = Path("plots") / "metrics" / "train"
FIGURE_NAMES = ("em.png", "recall_at_k.png", "pretrain_curves.png", "finetune_loss.png")
CURVE_TITLES = {"loss": "training loss", "retrieval_utility": "retrieval utility (RU, nats)"}
_RECALL = re.compile(r"^recall@(\d+)$")

Curve = tuple[list[float], list[float]]


@dataclass
class AblationRow:
    name: str
    what: str
    marginal: float | None
    null: float | None
    baseline: float | None
    ru_first: float | None
    ru_last: float | None
    in_candidates: float | None
    nq_recall5: float | None


@dataclass
class Ablations:
    path: Path
    what: str | None
    rows: list[AblationRow]
    skipped: list[str]
    device: str | None = None
    overrides: list[str] = field(default_factory=list)  # `--set` budget changes of the GPU script


@dataclass
class ReportInputs:
    eval: dict[str, dict[str, Any]]
    retrieval: dict[str, dict[str, Any]]
    ablations: list[Ablations]
    pretrain: dict[str, Curve]
    finetune: dict[str, Curve]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- inputs

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RealmError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RealmError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise RealmError(f"{path}: expected a JSON object")
    return data


def _num(value: Any) -> float | None:
    """A finite number, or None (missing keys, strings, nulls and NaN all read as missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def load_eval(path: str | Path) -> dict[str, Any]:
    """One evaluate-stage metrics file; a missing file or one without a method list is a RealmError."""
    path = Path(path)
    if not path.is_file():
        raise RealmError(f"{path}: no such file (the evaluate stage writes it)")
    data = _read_json(path)
    methods = data.get("methods")
    if methods is None:  # older files: every entry with an EM
        methods = [k for k, v in data.items() if isinstance(v, dict) and "em" in v]
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise RealmError(f"{path}: 'methods' must be a list of method names")
    if "full_test" in data and not isinstance(data["full_test"], dict):
        raise RealmError(f"{path}: 'full_test' must be an object")
    return {**data, "methods": methods}


def load_retrieval(path: str | Path) -> dict[str, Any] | None:
    """One evaluate_retrieval metrics file (None if absent), with "retrievers" listed."""
    path = Path(path)
    if not path.is_file():
        return None
    data = _read_json(path)
    names = [k for k, v in data.items() if isinstance(v, dict) and any(_RECALL.match(str(r)) for r in v)]
    return {**data, "retrievers": names}


def load_ablations(paths: list[str]) -> list[Ablations]:
    """Every existing ablation table of `paths`, in order; either format."""
    return [load_ablation_table(Path(p)) for p in paths if Path(p).is_file()]


def load_ablation_table(path: Path) -> Ablations:
    """One ablation table file, in either format; RealmError naming the file if it is malformed."""
    data = _read_json(path)
    nested = isinstance(data.get("variants"), dict)
    variants = data["variants"] if nested else {k: v for k, v in data.items() if isinstance(v, dict)}
    rows = []
    for name, row in variants.items():
        if not isinstance(row, dict):
            raise RealmError(f"{path}: variant '{name}' must be an object")
        nq = row.get("nq") if isinstance(row.get("nq"), dict) else {}
        what = str(row.get("what", "")) + (f"; NQ R@5: {row['nq_source']}" if row.get("nq_source") else "")
        rows.append(AblationRow(
            name=name, what=what, marginal=_num(row.get("marginal_accuracy")),
            null=_num(row.get("null_accuracy")), baseline=_num(row.get("baseline_accuracy")),
            ru_first=_num(row.get("ru_first")), ru_last=_num(row.get("ru_last")),
            in_candidates=_num(row.get("answer_in_candidates")),
            nq_recall5=_num(row.get("nq_recall@5", nq.get("recall@5")))))
    if not rows:
        raise RealmError(f"{path}: no ablation variants in it")
    skipped = data.get("skipped") if nested and isinstance(data.get("skipped"), list) else []
    what = data.get("what") if nested and isinstance(data.get("what"), str) else None
    device = data.get("device") if nested and isinstance(data.get("device"), str) else None
    params = data.get("params") if nested and isinstance(data.get("params"), dict) else {}
    overrides = params.get("overrides") if isinstance(params.get("overrides"), list) else []
    return Ablations(path=path, what=what, rows=rows, skipped=[str(s) for s in skipped], device=device,
                     overrides=[str(o) for o in overrides])


def read_curve(path: str | Path) -> Curve:
    """(steps, values) of a dvclive TSV (a `step` column and the metric's, named like the file)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RealmError(f"{path}: cannot read ({exc})") from None
    header = lines[0].split("\t") if lines else []
    value_cols = [c for c in header if c not in ("step", "timestamp")]
    if "step" not in header or not value_cols:
        raise RealmError(f"{path}: expected a dvclive TSV with a 'step' column and a value column")
    step_col = header.index("step")
    value_col = header.index(path.stem) if path.stem in header else header.index(value_cols[-1])
    steps, values = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            steps.append(float(cells[step_col]))
            values.append(float(cells[value_col]))
        except (IndexError, ValueError):
            raise RealmError(f"{path}:{lineno}: expected {len(header)} tab-separated numbers") from None
    return steps, values


def collect(cfg: ReportConfig) -> ReportInputs:
    """Read every input of the report; notes say which optional ones were absent."""
    notes = []
    evals = {d: load_eval(Path(cfg.eval_dir) / f"{d}.json") for d in cfg.datasets}
    retrieval = {}
    for d in cfg.datasets:
        loaded = load_retrieval(Path(cfg.retrieval_dir) / f"{d}.json")
        if loaded is None:
            notes.append(f"No zero-shot retrieval metrics for {DATASET_NAMES[d]} (`{cfg.retrieval_dir}/{d}.json`).")
        else:
            retrieval[d] = loaded
    ablations = load_ablations(cfg.ablations)
    if not ablations:
        notes.append("No pre-training ablation table (none of " + ", ".join(f"`{p}`" for p in cfg.ablations)
                     + " exists).")
    curves_dir = Path(cfg.pretrain_dir) / TRAIN_CURVES
    pretrain = {m: read_curve(curves_dir / f"{m}.tsv") for m in cfg.pretrain_curves
                if (curves_dir / f"{m}.tsv").is_file()}
    absent = [m for m in cfg.pretrain_curves if m not in pretrain]
    if absent:
        notes.append(f"No pre-training curve for {', '.join(absent)} (`{curves_dir}/`).")
    finetune = {}
    root = Path(cfg.finetune_dir)
    if root.is_dir():
        finetune = {run.name: read_curve(run / TRAIN_CURVES / "loss.tsv") for run in sorted(root.iterdir())
                    if (run / TRAIN_CURVES / "loss.tsv").is_file()}
    if not finetune:
        notes.append(f"No fine-tuning curves (`{root}/<dataset>-<method>/{TRAIN_CURVES}/loss.tsv`).")
    return ReportInputs(eval=evals, retrieval=retrieval, ablations=ablations, pretrain=pretrain,
                        finetune=finetune, notes=notes)


def check_inputs(cfg: ReportConfig) -> None:
    """Fail fast, before Prefect starts: every dataset's evaluate metrics file is there and readable."""
    for d in cfg.datasets:
        load_eval(Path(cfg.eval_dir) / f"{d}.json")


# ------------------------------------------------------------------------------------ formatting

def _pct(value: Any) -> str:
    x = _num(value)
    return "—" if x is None else f"{100 * x:.1f}"


def _dec(value: Any, digits: int = 3) -> str:
    x = _num(value)
    return "—" if x is None else f"{x:.{digits}f}"


def _count(value: Any) -> str:
    x = _num(value)
    return "?" if x is None else f"{int(x):,}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table; the first `left` columns align left, the rest (numbers) right."""
    rule = ["---"] * left + ["---:"] * (len(header) - left)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _method_entry(data: dict[str, Any], method: str) -> dict[str, Any]:
    entry = data.get(method)
    return entry if isinstance(entry, dict) else {}


def _methods(evals: dict[str, dict[str, Any]]) -> list[str]:
    """Every method of every dataset, in first-seen order."""
    out: list[str] = []
    for data in evals.values():
        out += [m for m in data["methods"] if m not in out]
    return out


def _recall_ks(entries: list[dict[str, Any]]) -> list[int]:
    return sorted({int(m.group(1)) for e in entries for k in e if (m := _RECALL.match(str(k)))})


def _n_blocks(inputs: ReportInputs) -> int | None:
    for data in (*inputs.eval.values(), *inputs.retrieval.values()):
        if _num(data.get("n_blocks")) is not None:
            return int(data["n_blocks"])
    return None


# -------------------------------------------------------------------------------------- markdown

def _qa_section(inputs: ReportInputs, sources: str) -> list[str]:
    ds = list(inputs.eval)
    methods = _methods(inputs.eval)
    header = ["method"] + [f"{DATASET_NAMES[d]} {col}" for d in ds for col in ("EM", "R@5")]
    rows = [[f"`{m}`"] + [c for d in ds for c in (_pct(_method_entry(inputs.eval[d], m).get("em")),
                                                 _pct(_method_entry(inputs.eval[d], m).get("recall@5")))]
            for m in methods]
    rows.append(["answer coverage (ceiling)"] + [_pct(inputs.eval[d].get("answer_coverage")) for d in ds for _ in "12"])
    rows += [[f"*paper:* {name}"] + [c for d in ds for c in (f"{paper[d]:.1f}", "")] for name, paper in PAPER_TABLE1]
    counts = ", ".join(f"{DATASET_NAMES[d]} {_count(inputs.eval[d].get('n_questions'))}" for d in ds)
    lines = ["## Open-domain QA (REALM Table 1)", "",
             f"Test exact match and Recall@5 of each fine-tuned method ({sources}); answer coverage is the share "
             "of questions whose answer occurs in some block, the ceiling of both. *Paper* rows: REALM Table 1, "
             f"test EM. Questions: {counts}.", ""]
    lines += _table(header, rows)
    missing = [f"`{m}` ({', '.join(DATASET_NAMES[d] for d in ds if m in inputs.eval[d]['methods'] and not _method_entry(inputs.eval[d], m))})"
               for m in methods if any(m in inputs.eval[d]["methods"] and not _method_entry(inputs.eval[d], m) for d in ds)]
    if missing:
        lines += ["", "Listed in `methods` but absent from the metrics: " + ", ".join(missing) + "."]
    full = inputs.eval.get("nq", {}).get("full_test")
    if full:
        ft_methods = [m for m in methods if _method_entry(full, m)]
        lines += ["", f"NQ-open full test ({_count(full.get('n_questions'))} questions, answer coverage "
                  f"{_pct(full.get('answer_coverage'))}%):", ""]
        lines += _table(["method", "EM", "EM (answerable)", "R@5"],
                        [[f"`{m}`", _pct(full[m].get("em")), _pct(full[m].get("em_answerable")),
                          _pct(full[m].get("recall@5"))] for m in ft_methods])
    entries = [_method_entry(inputs.eval[d], m) for d in ds for m in inputs.eval[d]["methods"]]
    ks = _recall_ks(entries)
    detail = []
    for d in ds:
        for m in inputs.eval[d]["methods"]:
            e = _method_entry(inputs.eval[d], m)
            if e:
                detail.append([DATASET_NAMES[d], f"`{m}`", _pct(e.get("em")), _pct(e.get("em_answerable")),
                               _pct(e.get("reader_oracle"))] + [_pct(e.get(f"recall@{k}")) for k in ks])
    lines += ["", "Per method: EM on the questions whose answer is in the corpus (answerable), the reader's "
              "oracle (an answer-bearing block among those it read), and Recall@k.", ""]
    lines += _table(["dataset", "method", "EM", "EM (answerable)", "reader oracle"] + [f"R@{k}" for k in ks],
                    detail, left=2)
    return lines


def _table2_section(inputs: ReportInputs) -> list[str]:
    nq = inputs.eval.get("nq")
    if nq is None:
        return []
    zero_shot = inputs.retrieval.get("nq", {})
    rows = []
    for method, (paper_row, em, r5, retriever) in PAPER_TABLE2_METHODS.items():
        if method in nq["methods"]:
            rows.append([paper_row, f"`{method}`", _pct(_method_entry(nq, method).get("em")),
                         f"{_pct(_method_entry(zero_shot, retriever).get('recall@5'))} (`{retriever}`)",
                         f"{em:.1f}", f"{r5:.1f}"])
    if not rows:
        return []
    lines = ["## Retriever and reader combinations (REALM Table 2)", "",
             "NQ test EM of each method, and zero-shot Recall@5 of the retriever it starts from (before fine-tuning, "
             "`metrics/retrieval`). *Paper*: REALM Table 2, NQ **dev** EM and zero-shot Recall@5.", ""]
    return lines + _table(["paper row", "method", "EM", "zero-shot R@5", "paper EM", "paper R@5"], rows, left=2)


def _ablation_section(tables: list[Ablations]) -> list[str]:
    lines = ["## Pre-training ablations", ""]
    if not tables:
        return lines + ["No ablation table found."]
    lines += ["Held-out masked-span accuracy (%) of the marginal over retrieved blocks, of the null block ∅ alone "
              "and of the no-retrieval BERT; RU = retrieval utility, log p(y|x) − log p(y|∅,x) in nats per mask, at "
              "the first and last held-out evaluation; answer in candidates (%); zero-shot NQ Recall@5 (%) of the "
              "variant's retriever. *Paper*: REALM Table 2, NQ dev EM / zero-shot Recall@5. One table per run: "
              "rows of different tables come from different devices, budgets or starting models.", ""]
    for i, abl in enumerate(tables):
        lines += ([""] if i else []) + _ablation_table(abl)
    return lines


def _ablation_table(abl: Ablations) -> list[str]:
    lines = [f"### `{abl.path}`" + (f" ({abl.device})" if abl.device else ""), ""]
    if abl.overrides:  # its "what" describes the script's default budget, which this run did not use
        lines += ["params.yaml's budget changed by " + ", ".join(f"`{o}`" for o in abl.overrides) + ".", ""]
    elif abl.what:
        lines += [abl.what + ".", ""]
    rows = []
    for r in abl.rows:
        paper = PAPER_TABLE2_ABLATIONS.get(r.name)
        rows.append([f"`{r.name}`", r.what, _pct(r.marginal), _pct(r.null), _pct(r.baseline),
                     f"{_dec(r.ru_first)} → {_dec(r.ru_last)}", _pct(r.in_candidates), _pct(r.nq_recall5),
                     f"{paper[0]}: {paper[1]:.1f} / {paper[2]:.1f}" if paper else ""])
    lines += _table(["variant", "what", "marginal acc", "∅ acc", "BERT acc", "RU first → last", "answer in cands",
                     "NQ R@5", "paper EM / R@5"], rows, left=2)
    if abl.skipped:
        lines += ["", "Not run: " + ", ".join(f"`{s}`" for s in abl.skipped) + "."]
    return lines


def _zero_shot_section(inputs: ReportInputs, retrieval_dir: str) -> list[str]:
    lines = ["## Zero-shot retrieval", ""]
    ds = list(inputs.retrieval)
    if not ds:
        return lines + [f"No zero-shot retrieval metrics under `{retrieval_dir}`."]
    names: list[str] = []
    for d in ds:
        names += [n for n in inputs.retrieval[d]["retrievers"] if n not in names]
    rows = [[f"`{n}`"] + [_pct(_method_entry(inputs.retrieval[d], n).get("recall@5")) for d in ds] for n in names]
    rows.append(["answer coverage (ceiling)"] + [_pct(inputs.retrieval[d].get("answer_coverage")) for d in ds])
    lines += [f"Recall@5 (%) of each retriever before any fine-tuning (`{retrieval_dir}`).", ""]
    return lines + _table(["retriever"] + [f"{DATASET_NAMES[d]} R@5" for d in ds], rows)


def render_markdown(inputs: ReportInputs, figures: list[tuple[str, str]], cfg: ReportConfig) -> str:
    """results.md: the tables, the figures (relative links) and the notes on absent inputs."""
    n_blocks = _n_blocks(inputs)
    corpus = f"a {n_blocks:,}-block corpus" if n_blocks else "a small corpus"
    lines = ["# Results", "",
             f"Written by the `report` stage (`python -m flows.report`). Numbers come from {corpus} and small "
             "models and are not comparable in absolute terms with the paper's. All figures are % except RU.", ""]
    lines += _qa_section(inputs, f"`{cfg.eval_dir}`") + [""]
    table2 = _table2_section(inputs)
    lines += table2 + ([""] if table2 else [])
    lines += _ablation_section(inputs.ablations) + [""]
    lines += _zero_shot_section(inputs, cfg.retrieval_dir) + [""]
    lines += ["## Figures", ""]
    for name, caption in figures:
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    if inputs.notes:
        lines += ["## Absent inputs", ""] + [f"- {n}" for n in inputs.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------- figures

def _figure(ncols: int, width: float = 4.6, height: float = 3.4):
    """A Figure on the Agg canvas (no pyplot, no global backend state) with `ncols` panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _save(fig, path: Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _styles(labels: list[str]) -> dict[str, dict[str, Any]]:
    """One colour (and, past ten, another marker) per label, the same in every panel."""
    markers = "osD^v<>"
    return {label: {"color": f"C{i % 10}", "marker": markers[i // 10 % len(markers)]} for i, label in enumerate(labels)}


def _em_figure(inputs: ReportInputs, path: Path, dpi: int) -> None:
    ds = list(inputs.eval)
    methods = _methods(inputs.eval)
    styles = _styles(methods)
    fig, (ax,) = _figure(1, width=max(5.0, 1.0 + 0.55 * len(ds) * max(1, len(methods))), height=4.2)
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(ds))]
        ems = [_num(_method_entry(inputs.eval[d], m).get("em")) for d in ds]
        bars = ax.bar([x for x, e in zip(xs, ems) if e is not None], [100 * e for e in ems if e is not None],
                      width=width * 0.95, color=styles[m]["color"], label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    for j, d in enumerate(ds):
        cov = _num(inputs.eval[d].get("answer_coverage"))
        if cov is not None:
            ax.hlines(100 * cov, j - 0.45, j + 0.45, colors="black", linestyles="dotted",
                      label="answer coverage (ceiling)" if j == 0 else None)
    ax.set_xticks(range(len(ds)), [f"{DATASET_NAMES[d]} test" for d in ds])
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Fine-tuned QA: test exact match")
    fig.legend(loc="outside lower center", ncols=min(3, len(methods) + 1), fontsize=8)
    _save(fig, path, dpi)


def _recall_figure(inputs: ReportInputs, path: Path, dpi: int) -> None:
    ds = [d for d in inputs.eval]
    methods = _methods(inputs.eval)
    zero = []
    for d in ds:
        zero += [n for n in inputs.retrieval.get(d, {}).get("retrievers", []) if n not in zero]
    labels = methods + [f"{n} (zero-shot)" for n in zero]
    styles = _styles(labels)
    fig, axes = _figure(len(ds), width=4.0, height=3.6)
    for ax, d in zip(axes, ds):
        series = [(m, _method_entry(inputs.eval[d], m), "-") for m in inputs.eval[d]["methods"]]
        series += [(f"{n} (zero-shot)", _method_entry(inputs.retrieval.get(d, {}), n), "--")
                   for n in inputs.retrieval.get(d, {}).get("retrievers", [])]
        for label, entry, line in series:
            points = [(k, _num(entry.get(f"recall@{k}"))) for k in _recall_ks([entry])]
            points = [(k, 100 * v) for k, v in points if v is not None]
            if points:
                ax.plot(*zip(*points), linestyle=line, label=label, markersize=4, **styles[label])
        cov = _num(inputs.eval[d].get("answer_coverage"))
        if cov is not None:
            ax.axhline(100 * cov, color="gray", linestyle=":", label="answer coverage (ceiling)")
        ks = _recall_ks([e for _, e, _ in series]) or [1]
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_ylim(0, 102)
        ax.set_xlabel("k (retrieved blocks)")
        ax.set_title(f"{DATASET_NAMES[d]} test")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@k (%)")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=8)
    _save(fig, path, dpi)


def _pretrain_figure(curves: dict[str, Curve], path: Path, dpi: int) -> None:
    fig, axes = _figure(len(curves), width=4.4, height=3.2)
    for ax, (metric, (steps, values)) in zip(axes, curves.items()):
        ax.plot(steps, values, color="C0", linewidth=1.2, marker="o" if len(steps) <= 50 else None, markersize=3)
        if metric == "retrieval_utility":
            ax.axhline(0, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"pretrain_realm: {CURVE_TITLES.get(metric, metric)}")
        ax.grid(alpha=0.3)
    _save(fig, path, dpi)


def _finetune_figure(runs: dict[str, Curve], datasets: list[str], path: Path, dpi: int) -> None:
    groups: dict[str, dict[str, Curve]] = {}
    for name, curve in runs.items():
        dataset, _, method = name.partition("-")
        key = dataset if dataset in datasets and method else "other"
        groups.setdefault(key, {})[method if key != "other" else name] = curve
    order = [d for d in datasets if d in groups] + (["other"] if "other" in groups else [])
    labels: list[str] = []
    for g in order:
        labels += [m for m in groups[g] if m not in labels]
    styles = _styles(labels)
    fig, axes = _figure(len(order), width=4.2, height=3.4)
    for ax, g in zip(axes, order):
        for method, (steps, values) in groups[g].items():
            ax.plot(steps, values, label=method, color=styles[method]["color"], linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_title(f"fine-tuning loss: {DATASET_NAMES.get(g, g)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training loss")
    _save(fig, path, dpi)


def write_figures(inputs: ReportInputs, cfg: ReportConfig) -> list[tuple[str, str]]:
    """Write every figure the inputs allow; (file name, caption) each, in report order."""
    out = Path(cfg.output_dir)
    made = []
    if _methods(inputs.eval):
        _em_figure(inputs, out / "em.png", cfg.dpi)
        made.append(("em.png", "Test exact match per fine-tuned method; dotted: answer coverage (ceiling)"))
    _recall_figure(inputs, out / "recall_at_k.png", cfg.dpi)
    made.append(("recall_at_k.png", "Recall@k per method (solid) and zero-shot retriever (dashed)"))
    if inputs.pretrain:
        _pretrain_figure(inputs.pretrain, out / "pretrain_curves.png", cfg.dpi)
        made.append(("pretrain_curves.png", f"REALM pre-training curves over steps (`{cfg.pretrain_dir}`)"))
    if inputs.finetune:
        _finetune_figure(inputs.finetune, cfg.datasets, out / "finetune_loss.png", cfg.dpi)
        made.append(("finetune_loss.png", f"Fine-tuning loss per run (`{cfg.finetune_dir}`)"))
    return made


# ------------------------------------------------------------------------------------------ stage

def run_report(cfg: ReportConfig, info: Callable[[str], None] = print) -> dict[str, Any]:
    """Read the inputs, write the PNGs then results.md; return what was written."""
    inputs = collect(cfg)
    out = Path(cfg.output_dir)
    figures = write_figures(inputs, cfg)
    for name in FIGURE_NAMES:  # a figure this run did not draw must not linger from an earlier one
        if name not in dict(figures) and (out / name).is_file():
            (out / name).unlink()
    write_text_atomic(out / "results.md", render_markdown(inputs, figures, cfg))
    for note in inputs.notes:
        info(note)
    info(f"report: {out / 'results.md'} and {len(figures)} figures ({', '.join(n for n, _ in figures)})")
    return {"results": str(out / "results.md"), "figures": [str(out / n) for n, _ in figures],
            "datasets": list(inputs.eval), "methods": _methods(inputs.eval),
            "ablations": [str(a.path) for a in inputs.ablations], "notes": inputs.notes}
