"""The README's commands are the ones CI runs, and its numbers come from files in the repo."""
import os
import re

from conftest import ROOT

TEST_COMMAND = "pip install -r requirements.txt && python -m pytest -q tests"


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    assert TEST_COMMAND in read("README.md")
    ci_lines = [line.strip() for line in read(".ci/run").splitlines() if line.strip() and not line.startswith("#")]
    assert ci_lines[-1] == TEST_COMMAND


def test_the_readme_is_a_front_page():
    assert len(read("README.md").splitlines()) <= 250


def test_every_documented_command_names_a_script_that_exists():
    """Each `python X.py` in the README, RESULTS.md and the scripts' docstrings runs at its path."""
    import glob
    docs = ["README.md", "RESULTS.md"] + [os.path.relpath(p, ROOT) for folder in ("", "bench", "examples")
                                          for p in glob.glob(os.path.join(ROOT, folder, "*.py"))]
    named = {(doc, script) for doc in docs for script in re.findall(r"python ([a-z_/]+\.py)", read(doc))}
    assert named and not {(doc, s) for doc, s in named if not os.path.exists(os.path.join(ROOT, s))}


def test_readme_and_results_images_and_links_exist():
    for doc in ("README.md", "RESULTS.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", read(doc)):
            if not target.startswith("http"):
                assert os.path.exists(os.path.join(ROOT, target)), (doc, target)


def test_the_readme_python_example_runs_as_written_outside_the_checkout(tiny_checkpoints, tmp_path):
    """The "Explaining from Python" block, run as a reader pastes it, in a folder outside the checkout:
    the installed package, not the repository, provides `tig` (on a tiny checkpoint)."""
    import subprocess
    import sys
    readme = read("README.md")
    section = readme[readme.index("## Explaining from Python"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'load_checkpoint("checkpoints/reviews")' in block        # what the quick start trains
    script = tmp_path / "example.py"
    script.write_text(block.replace('"checkpoints/reviews"', repr(tiny_checkpoints["cnn"]))
                      + "\nprint(ig.scores.shape == token_ids.shape, abs(float(ig.delta[0])) < 0.05, tig.__file__)\n",
                      encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    shape_ok, complete, where = done.stdout.split()[-3:]
    assert (shape_ok, complete) == ("True", "True")
    assert os.path.dirname(where) == os.path.join(ROOT, "tig") or "site-packages" in where


def test_one_tensorflow_distribution():
    """pyproject.toml asks for exactly one TensorFlow distribution, and the environment holds one:
    tensorflow and tensorflow-cpu write the same package folder, so having both breaks on any change."""
    import importlib.metadata
    import tomllib
    wanted = tomllib.loads(read("pyproject.toml"))["project"]["dependencies"]
    names = [re.split(r"[<>=\[ ]", w)[0].lower() for w in wanted if w]
    assert [n for n in names if n.startswith("tensorflow")] == ["tensorflow"]
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert not {"tensorflow-cpu", "tensorflow-intel"} & installed, "a second TensorFlow distribution is installed"
