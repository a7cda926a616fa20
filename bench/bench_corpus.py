"""Benchmark corpus-scale work: explain.py throughput and memory as the corpus grows, and the
THUCTC folder loader's memory on a generated tree of many files.

    python bench/bench_corpus.py explain --checkpoint runs/weibo --task weibo --data-dir ../shared/data --sizes 1000,10000
    python bench/bench_corpus.py thuctc --files 50000 --body-chars 1000,4000

explain: builds a .txt corpus of N texts (the task's texts, repeated with a counter when N exceeds
them), runs `python explain.py` on it in a fresh process per size, and prints texts/s of the
explanation loop and the share of that loop spent inside the attribution calls (both from
explain.py's own report, so measured in the same run: 100% would be the integrated-gradients floor),
the peak RSS of that process (its VmHWM), and for reference the rate of one integrated_gradients
call on BATCH texts measured here.
thuctc: writes THUCNews/<category>/<n>.txt files (a title line, then a body of --body-chars
characters), loads them with dataset.load_task in a fresh process and prints its peak RSS against the
corpus size on disk: bodies are never read, so memory follows the number of files, not their size.
"""
import sys

import os

from tig.cli import quiet_tensorflow

import json
import re
import shutil
import subprocess
import tempfile
import time

SIZES = "1000,10000"
STEPS = 50
BATCH = 64
CATEGORIES = 14            # THUCNews has 14 categories
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repo root


PEAK_RSS = ("import os, runpy, sys\n"
            "def report():\n"
            "    with open('/proc/self/status') as f:\n"
            "        hwm = [l.split()[1] for l in f if l.startswith('VmHWM:')][0]\n"
            "    sys.stderr.write(f'\\nPEAK_RSS_KB {hwm}\\n')\n"
            "import atexit; atexit.register(report)\n")


def run_measured(argv, **kwargs):
    """(exit code, stdout, stderr, wall seconds, peak RSS MB) of `python argv...` in a fresh process.
    The peak is the child's own VmHWM, read at exit (ru_maxrss of a child would include this
    process's memory, inherited at fork)."""
    if argv[0] == "-c":
        code = PEAK_RSS + argv[1]
    else:
        code = PEAK_RSS + f"sys.argv = {argv!r}; runpy.run_path({argv[0]!r}, run_name='__main__')"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - start
    match = re.search(r"PEAK_RSS_KB (\d+)", proc.stderr)
    rss = int(match.group(1)) / 1024 if match else float("nan")
    return proc.returncode, proc.stdout, proc.stderr, wall, rss


def write_corpus(path, texts, n):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            base = texts[i % len(texts)].replace("\n", " ")
            f.write((base if i < len(texts) else f"{base} {i // len(texts)}") + "\n")


def ig_floor_rate(checkpoint, texts, steps):
    """texts/s of one integrated_gradients call on BATCH texts (best of 3, after a warm-up call)."""
    from tig.ig import integrated_gradients
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(checkpoint)
    ids = ckpt.tokenizer.encode(texts[:BATCH], ckpt.maxlen)
    integrated_gradients(ckpt.model, ids, steps=steps)
    times = []
    for _ in range(3):   # best of 3: the machine is shared
        start = time.perf_counter()
        integrated_gradients(ckpt.model, ids, steps=steps)
        times.append(time.perf_counter() - start)
    return len(ids) / min(times)


def bench_explain(args):
    from tig.dataset import load_task
    data = load_task(args.task, args.data_dir)
    texts = data.test.texts + data.val.texts + data.train.texts
    floor = ig_floor_rate(args.checkpoint, texts, args.steps)
    print(f"checkpoint {args.checkpoint}, {args.steps} steps, {os.cpu_count()} CPU cores; "
          f"integrated_gradients on {BATCH} texts alone: {floor:.1f} texts/s")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            corpus = os.path.join(tmp, f"corpus-{n}.txt")
            write_corpus(corpus, texts, n)
            out = os.path.join(tmp, f"out-{n}")
            command = [os.path.join(ROOT, "explain.py"), "--checkpoint", args.checkpoint,
                       "--input", corpus, "--out", out, "--steps", str(args.steps)]
            code, stdout, stderr, wall, rss = run_measured(command, cwd=ROOT)
            if code != 0:
                sys.exit(f"explain.py failed on {n} texts: {stderr.strip()[-500:]}")
            found = re.search(r"in ([\d.]+)s: ([\d.]+) texts/s .*alone took ([\d.]+)s", stderr)
            loop_s, rate, ig_s = (float(v) for v in found.groups())
            results.append({"texts": n, "texts_per_s": rate, "wall_s": round(wall, 1), "peak_rss_mb": round(rss),
                            "attribution_share": round(ig_s / loop_s, 3),
                            "corpus_mb": round(os.path.getsize(corpus) / 2**20, 2)})
            print(f"{n:7d} texts: {rate:7.1f} texts/s, {ig_s / loop_s:.0%} of the loop inside attribution calls, "
                  f"peak RSS {rss:6.0f} MB, wall {wall:.0f}s")
            shutil.rmtree(out)
    print(json.dumps({"ig_floor_texts_per_s": round(floor, 1), "runs": results}))


def make_thuctc(root, files, body_chars):
    """THUCNews/<category>/<n>.txt: a title line, then body_chars characters of body."""
    body = ("正文内容" * (body_chars // 4 + 1))[:body_chars]
    for i in range(files):
        folder = os.path.join(root, "THUCNews", f"类别{i % CATEGORIES:02d}")
        if i < CATEGORIES:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write(f"第{i}条新闻标题 类别{i % CATEGORIES}\n{body}\n")


def disk_mb(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 2**20


def bench_thuctc(args):
    print(f"THUCTC layout, {args.files} files in {CATEGORIES} folders")
    results = []
    for body in [int(s) for s in args.body_chars.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            make_thuctc(tmp, args.files, body)
            size = disk_mb(tmp)
            code = ("import json; from tig.dataset import load_task; "
                    "d = load_task('thucnews', %r, download=False); "
                    "print(json.dumps({'texts': len(d.train.texts) + len(d.val.texts) + len(d.test.texts)}))"
                    % (tmp,))
            status, stdout, stderr, wall, rss = run_measured(["-c", code])
            if status != 0:
                from tig.errors import UserError
                raise UserError(f"loading failed: {stderr.strip().splitlines()[-1][:300] if stderr.strip() else status}")
            texts = json.loads(stdout)["texts"]
            results.append({"files": args.files, "body_chars": body, "corpus_mb": round(size), "texts": texts,
                            "peak_rss_mb": round(rss), "load_s": round(wall, 1)})
            print(f"bodies of {body:5d} chars: corpus {size:7.0f} MB on disk, {texts} texts loaded, "
                  f"peak RSS {rss:5.0f} MB, {wall:.0f}s")
    print(json.dumps(results))


def main():
    from tig.cli import ArgumentParser, int_range  # defaults in --help, one-line errors
    p = ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("explain", help="explain.py texts/s and peak RSS per corpus size")
    e.add_argument("--checkpoint", required=True, help="Checkpoint folder of the model that explains.")
    e.add_argument("--task", required=True, help="source of the texts")
    e.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    e.add_argument("--sizes", default=SIZES, help="comma list of corpus sizes (texts)")
    e.add_argument("--steps", type=int_range(1, 1024), default=STEPS, help="Integrated gradients steps.")
    t = sub.add_parser("thuctc", help="peak RSS of loading a generated THUCTC tree")
    t.add_argument("--files", type=int_range(1), default=50000, help="Number of generated THUCTC files.")
    t.add_argument("--body-chars", default="1000,4000", help="comma list of body lengths to compare")
    args = p.parse_args()
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    return bench_explain(args) if args.what == "explain" else bench_thuctc(args)


if __name__ == "__main__":
    from tig.cli import run
    run(main)
