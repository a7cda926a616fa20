"""The README gallery: gradient x input and integrated gradients PNGs on the same test sentences
of each task's checkpoint, plus asset/gallery.md with the same rows as <font> spans.

    python bench/gallery.py --data-dir DIR            # reads checkpoints/<task>, writes out/gallery/
    python bench/gallery.py --data-dir DIR --tasks hotel --checkpoints runs --out /tmp/gallery
    python bench/gallery.py --data-dir DIR --checkpoints runs/gallery --out asset --replace   # the README's

Sentences are the first correctly classified test texts of at most GALLERY_MAXCHARS
characters, at most ceil(GALLERY_PER_TASK / classes) per true class.
"""

import os

from tig.errors import printable
from tig.cli import quiet_tensorflow

TASKS = ("thucnews", "weibo", "moods", "hotel")
PER_TASK = 4
MAXCHARS = 48       # gallery sentences are short enough to read in a README
OUT = os.path.join("out", "gallery")   # git-ignored; the README's asset/ is written only when asked
SHOWN = ("grad", "ig")   # methods shown (tig/methods.py names; also the PNG file names)


def main(argv=None):
    from tig.errors import UserError
    from tig.files import atomic_write, prepare_output_dir
    from tig.cli import CHECKPOINTS_DIR, ArgumentParser, add_replace_argument, comma_list, resolve_checkpoint
    from tig.plots import to_png
    from tig.methods import canonical
    from tig.render import METHOD_TITLES, to_markdown
    from tig.defaults import STEPS
    from tig.explanations import pick_samples, run_methods
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("--tasks", default=list(TASKS), type=comma_list(TASKS, "task"), help="Comma list of tasks to show.")
    p.add_argument("--checkpoints", default=CHECKPOINTS_DIR, help="folder with one checkpoint per task, <folder>/<task>")
    p.add_argument("--out", default=OUT, help="Output folder for the PNGs and gallery.md (asset/ is the README's "
                                              "copy: regenerating it takes --out asset --replace).")
    add_replace_argument(p)
    args = p.parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    directories = {task: os.path.join(args.checkpoints, task) for task in args.tasks}
    for task, directory in directories.items():     # before any work: every checkpoint is there
        if not os.path.isdir(directory):
            raise UserError(f"no checkpoint for task {task!r} at {directory}; train one with: "
                            f"python train.py --task {task} --data-dir DIR --out {directory}")
    names = [f"{task}_{method}.png" for task in args.tasks for method in SHOWN] + ["gallery.md"]
    prepare_output_dir(args.out, names, args.replace)
    sections = []
    for task, directory in directories.items():
        ckpt = resolve_checkpoint(task, checkpoint=directory)
        texts, labels = pick_samples(ckpt, task, args.data_dir, PER_TASK, max_chars=MAXCHARS, balanced=True)
        metrics = ckpt.metrics
        section = [f"### {task}", "", f"<sub>checkpoint {directory} ({ckpt.meta.get('arch')}), "
                                    f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}, "
                                    f"macro-F1 {metrics.get('test_macro_f1', float('nan')):.4f}</sub>", ""]
        for short in SHOWN:
            method = canonical(short)
            rows = run_methods(ckpt, texts, [method], labels=labels, steps=STEPS)
            png = to_png(rows, os.path.join(args.out, f"{task}_{short}.png"),
                         title=f"{task} · {METHOD_TITLES[method]}")
            section += [f"![{task} {short}]({os.path.basename(png)})", "", to_markdown(rows), ""]
            print(f"wrote {printable(png)}")
        sections.append("\n".join(section))
    command_checkpoints = "" if args.checkpoints == CHECKPOINTS_DIR else f" --checkpoints {args.checkpoints}"
    command_checkpoints += "" if args.out == OUT else f" --out {args.out}" + (" --replace" if args.replace else "")
    path = atomic_write(os.path.join(args.out, "gallery.md"),
                        f"# Gallery\n\nMade by `python bench/gallery.py --data-dir DIR{command_checkpoints}` from the "
                        f"checkpoints in {args.checkpoints}/.\n\n" + "\n".join(sections))
    print(f"wrote {printable(path)}")


if __name__ == "__main__":
    from tig.cli import run
    run(main)
