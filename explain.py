"""Explain a whole corpus: attributions for every text as JSONL shards, then a global summary of
what drives the classifier (per class: the characters and jieba words with the largest mean and
total attribution).

    python explain.py --checkpoint checkpoints/weibo --task weibo --split test --data-dir ../shared/data \\
        --out runs/explain-weibo
    python explain.py --checkpoint checkpoints/hotel --input texts.txt --out runs/texts --method grad
    python explain.py ... --engine ray --ray-address auto --concurrency 4 --num-gpus 1   # on a Ray cluster

Input (tig/corpus.py): .txt (one text per line), .csv (a text/review/title/content column, optional label
column), .jsonl ({"text": ..., optional "label": ...}), or --task T --split train|val|test. Blank texts
are skipped and counted; every text is cut to dataset.MAX_TEXT_CHARS characters as it is read.

--out is a new or empty directory, or one this program made for the same job (then it resumes):
    explain.json              the job: checkpoint, input and its sha256, method, steps, shard size, classes
    shards/part-00000.jsonl   one line per text, in input order: id, text, label, tokens, scores,
                              predicted, probs, target, output F_t(x), baseline_output F_t(x'), delta,
                              steps, words and word_scores (char scores summed per jieba word)
    summary.csv, summary.png, summary.html   the global summary (tig/summary.py)
A shard (--shard-size texts) is the unit of work and of atomic commit: written to a temp file, then
renamed. After an interruption the same command skips finished shards and redoes only the rest, so
no line is lost or duplicated. For IG, sum(scores) + delta = output - baseline_output per line.

Engines: local (default: this process) or ray (Ray Data: read shards -> map_batches with a stateful
explainer that loads the checkpoint once per worker -> each worker writes its shards). Both run the
same Explainer on the same shards, so they write the same attributions.
"""
import json
import os
import re
import sys
import time

from tig.cli import quiet_tensorflow
from tig.cli import Progress
from tig.corpus import SPLITS, FileSource, TaskSource, plan_shards, read_shard
from tig.errors import UserError, printable
from tig.files import atomic_write, check_folder_path, files_sha256, process_alive
from tig.defaults import STEPS
from tig.shards import METHOD, TEXTS_PER_CALL, Explainer, ShardExplainer, ShardReader, explainer_args, shard_path, write_shard
from tig.summary import MIN_COUNT, TOP_K, write_summary

# defaults, visible in one place
SHARD_SIZE = 1000          # texts per shard: the unit of atomic commit and of resume
ENGINES = ("local", "ray")
MANIFEST = "explain.json"
JOB_KEYS = ("checkpoint", "model_sha256", "input", "method", "steps", "baseline", "target", "shard_size")
# every name explain.py may create inside --out; anything else there means the folder is someone else's
OWN_FILES = re.compile(r"^(\.?explain\.json|\.?summary\.(csv|png|html)|shards|shards/\.?part-\d{5,}\.jsonl)"
                       r"(\.tmp-\d+-[a-z0-9_]+)?$")   # with files.atomic_write's temporary names


# --- explaining ------------------------------------------------------------------------------

# --- output folder: ownership, manifest, atomic shards -------------------------------------------------

def foreign_files(out):
    """Files in out that explain.py did not create (relative paths). Only out and out/shards are
    listed, never walked below: a foreign folder (even /) is refused at its first foreign name."""
    found = []
    for folder in ("", "shards"):
        path = os.path.join(out, folder)
        if folder and not (os.path.isdir(path) and not os.path.islink(path)):
            continue
        for name in sorted(os.listdir(path)):
            rel = f"{folder}/{name}" if folder else name
            if not OWN_FILES.match(rel) or (folder and os.path.isdir(os.path.join(path, name))):
                found.append(rel)
                return found   # one is enough to refuse
    return found


TEMP_OF = re.compile(r"\.tmp-(\d+)-[a-z0-9_]+$")   # files.atomic_write's temp names carry the writer's pid


def remove_dead_temps(folder):
    """Delete the temp files of our runs that are no longer alive (a live run on the same --out keeps
    its own)."""
    for name in os.listdir(folder):
        match = TEMP_OF.search(name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            os.remove(os.path.join(folder, name))


def shard_problem(out, k, first_id, count, job):
    """Why the finished shard k cannot be kept (None when it is whole): its line count, JSON and ids.
    (The model is the job's: explain.json records its sha256, and every explainer compares it.)"""
    path = shard_path(out, k)
    n = 0
    try:
        with open(path, encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                line = json.loads(raw)
                if not isinstance(line, dict) or line.get("id") != first_id + n - 1:
                    return f"line {n} is not text {first_id + n - 1} of the job"
    except (ValueError, UnicodeDecodeError) as e:
        return f"line {n + 1} is not JSON ({e.__class__.__name__})"
    if n != count:
        return f"{n} lines for {count} texts"
    return None


def prepare_out(out, job):
    """Create out, or check an existing out belongs to this very job (then resume); one-line errors."""
    check_folder_path(out)
    if os.path.isdir(out) and os.listdir(out):
        foreign = foreign_files(out)
        manifest = os.path.join(out, MANIFEST)
        if foreign or not os.path.exists(manifest):
            example = foreign[0] if foreign else sorted(os.listdir(out))[0]
            raise UserError(f"--out {out} contains files explain.py did not create (e.g. {example}); "
                            "give a new or empty directory")
        try:
            with open(manifest, encoding="utf-8") as f:
                previous = json.load(f)
            if not isinstance(previous, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"--out {out}: {MANIFEST} is damaged ({e.__class__.__name__}); give a new directory, "
                            f"or delete {out} to start this job again") from None
        changed = [k for k in JOB_KEYS if previous.get(k) != job.get(k)]
        if changed:
            raise UserError(f"--out {out} holds a different job ({', '.join(changed)} differ); "
                            "give a new directory to explain this one")
        remove_dead_temps(os.path.join(out, "shards"))   # of interrupted runs of ours: never committed
        return True
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    atomic_write(os.path.join(out, MANIFEST), lambda f: json.dump(job, f, ensure_ascii=False, indent=2))
    return False


# --- engines -----------------------------------------------------------------------------------

def run_local(job, source, pending, out, progress):
    explainer = Explainer(**explainer_args(job))
    for k, start, count in pending:
        records = read_shard(source, start, count)
        write_shard(out, k, explainer(k * job["shard_size"], records))
        progress.advance(count)
    return explainer


def run_ray(job, source, pending, out, progress, concurrency=1, num_gpus=0, address=None):
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        if address:   # a cluster: `ray job submit --working-dir .` puts this folder on the workers' path
            ray.init(address=address, log_to_driver=False)
        else:         # a local Ray: its workers import tig.shards from the installed package
            ray.init(include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False   # ours shows texts/s
    if not pending:
        return
    descriptors = [{"shard": k, "start": start, "count": count} for k, start, count in pending]
    ds = ray.data.from_items(descriptors, override_num_blocks=len(descriptors))
    ds = ds.map_batches(ShardReader, fn_constructor_kwargs={"source": source}, batch_size=1, concurrency=1)
    gpu = {"num_gpus": num_gpus} if num_gpus else {}
    ds = ds.map_batches(ShardExplainer, fn_constructor_kwargs={"job": job, "out": os.path.abspath(out)},
                        batch_size=1, concurrency=concurrency, **gpu)
    for row in ds.iter_rows():
        progress.advance(int(row["texts"]))


def iter_lines(out, n_shards):
    for k in range(n_shards):
        with open(shard_path(out, k), encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


# --- CLI -------------------------------------------------------------------------------------

def parse_args(argv=None):
    from tig.cli import ArgumentParser, choice, float_range, int_range
    from tig.dataset import TASKS
    from tig.methods import NAMES, describe
    from tig.validate import BASELINES, MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory written by train.py")
    p.add_argument("--input", default=None, help="a .txt (one text per line), .csv or .jsonl file")
    p.add_argument("--task", default=None, type=choice(TASKS, "task"),
                   help=f"explain a task's split instead: one of {', '.join(TASKS)}")
    p.add_argument("--split", default="test", type=choice(SPLITS, "split"), help=f"with --task: one of {', '.join(SPLITS)}")
    p.add_argument("--data-dir", default=None, help="data directory for --task")
    p.add_argument("--out", required=True, help="output directory (new, empty, or a previous run of this job)")
    p.add_argument("--method", default=METHOD, type=choice(NAMES, "method"), help=describe())
    p.add_argument("--steps", type=int_range(1, MAX_STEPS), default=STEPS,
                   help=f"integrated gradients steps (Gauss-Legendre), 1 to {MAX_STEPS}")
    p.add_argument("--baseline", default=None, type=choice(BASELINES, "baseline"),
                   help="zero, pad, unk or mask (default: zero)")
    p.add_argument("--target", default=None, help="class to explain, by index or name (default: predicted)")
    p.add_argument("-n", type=int_range(1), default=None, help="explain only the first N texts")
    p.add_argument("--shard-size", type=int_range(1), default=SHARD_SIZE, help="texts per shard (unit of resume)")
    p.add_argument("--texts-per-call", type=int_range(1), default=TEXTS_PER_CALL, help="texts per attribution call")
    p.add_argument("--min-count", type=int_range(1), default=MIN_COUNT, help="occurrences a unit needs to be ranked")
    p.add_argument("--top", type=int_range(1), default=TOP_K, help="units per class, level and ranking in summary.csv")
    p.add_argument("--engine", default="local", type=choice(ENGINES, "engine"), help=f"one of: {', '.join(ENGINES)}")
    p.add_argument("--concurrency", type=int_range(1), default=1, help="ray: explainer workers (actors)")
    p.add_argument("--num-gpus", type=float_range(0, 1024), default=0, help="ray: GPUs per explainer worker")
    p.add_argument("--ray-address", default=None, help="ray: cluster address (default: start a local Ray)")
    args = p.parse_args(argv)
    if bool(args.input) == bool(args.task):
        p.error("give exactly one of --input FILE or --task T")
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    from tig.cli import class_index
    from tig.checkpoint import MODEL_FILE, current_version, load_checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    source = FileSource(args.input) if args.input else TaskSource(args.task, args.split, args.data_dir)
    shards, n_texts, input_sha = plan_shards(source, args.shard_size, args.n)
    if n_texts == 0:
        raise UserError("no texts to explain: the input holds only blank texts")
    job = {"program": "explain.py", "checkpoint": os.path.abspath(args.checkpoint),
           "model_sha256": files_sha256(os.path.join(current_version(args.checkpoint), MODEL_FILE)),
           "input": {**source.describe(), "sha256": input_sha, "limit": args.n}, "texts": n_texts,
           "method": args.method, "steps": args.steps if args.method == "ig" else None,
           "baseline": (args.baseline or "zero") if args.method == "ig" else None,
           "target": class_index(args.target, ckpt.classes), "shard_size": args.shard_size,
           "shards": len(shards), "texts_per_call": args.texts_per_call, "classes": ckpt.classes,
           "level": ckpt.tokenizer.level}
    resumed = prepare_out(args.out, job)
    pending = []
    for k, (start, count) in enumerate(shards):
        if os.path.exists(shard_path(args.out, k)):
            problem = shard_problem(args.out, k, k * args.shard_size, count, job)
            if problem is None:
                continue
            print(printable(f"{shard_path(args.out, k)} is damaged ({problem}); explaining its texts again"),
                  file=sys.stderr)
        pending.append((k, start, count))
    done = n_texts - sum(count for _, _, count in pending)
    if resumed:
        print(f"resuming {printable(args.out)}: {len(shards) - len(pending)} of {len(shards)} shards already written",
              file=sys.stderr)
    progress = Progress(n_texts, "text", done=done, every=5.0)
    explainer = None
    if args.engine == "ray":
        run_ray(job, source, pending, args.out, progress, args.concurrency, args.num_gpus, args.ray_address)
    else:
        explainer = run_local(job, source, pending, args.out, progress)
    elapsed, new = time.perf_counter() - progress.start, progress.done - progress.first
    if new:
        floor = (f"; the attribution calls alone took {explainer.attribution_seconds:.1f}s "
                 f"({explainer.attribution_seconds / elapsed:.0%} of it)" if explainer else "")
        print(f"explained {new} texts in {elapsed:.1f}s: {new / elapsed:.1f} texts/s "
              f"({args.engine} engine){floor}", file=sys.stderr)
    rows, written = write_summary(args.out, job, iter_lines(args.out, job["shards"]), args.min_count, args.top)
    for cls in ckpt.classes:
        top = [r["unit"] for r in rows if (r["class"], r["level"], r["ranking"]) == (cls, "char", "mean")][:8]
        print(printable(f"{cls}: top characters by mean attribution: {' '.join(top) or '(none)'}"))
    for path in written:
        print(f"wrote {printable(path)}")
    return job


if __name__ == "__main__":
    from tig.cli import run
    run(main)
