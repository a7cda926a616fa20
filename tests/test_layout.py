"""The layout the README promises: the card's files and a few commands at the top, the shared internals
in the `tig` package, benchmarks in bench/ and foreign-model examples in examples/; no import cycle
among the project's modules (imports inside functions count), no edge from the package or the library
up to a command, no import of another module's private names, no file over 400 lines, and every
module named in the README's Layout table."""
import ast
import os
import re

from conftest import ROOT

MAX_LINES = 400
CARD = {"dataset", "tokenizer", "model", "train", "gradients", "integrated_gradients", "visualize"}
COMMANDS = {"train", "visualize", "evaluate", "explain", "serve"}     # what a user types, at the top
LIBRARY = CARD - COMMANDS                                              # the card's importable modules
FOLDERS = {"": "", "tig": "tig.", "bench": "", "examples": ""}         # folder -> how its modules are imported


def modules():
    """{module name as imported: path relative to the repo root} for every project .py file."""
    found = {}
    for folder, prefix in FOLDERS.items():
        for f in sorted(os.listdir(os.path.join(ROOT, folder or "."))):
            if f.endswith(".py") and f != "__init__.py":
                found[prefix + f[:-3]] = os.path.join(folder, f)
    return found


def import_nodes(path):
    return [node for node in ast.walk(ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read()))
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def imports_of(name, path, known):
    """Project modules that `name` imports anywhere in its file (top level or inside functions)."""
    found = set()
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}     # from tig import validate
    return (found & set(known)) - {name}


def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_top_level_is_the_card_and_a_few_commands():
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    assert CARD <= top and top <= CARD | COMMANDS and len(top) <= 10, sorted(top)
    assert {"tig", "bench", "examples", "tests", "asset"} <= set(os.listdir(ROOT))


def test_the_package_init_exports_the_api_lazily():
    """`import tig` gives the public API (its __all__), and loads no TensorFlow until a name is used."""
    import subprocess
    import sys
    import tempfile
    code = ("import sys, tig; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "print(tig.integrated_gradients.__module__, tig.gradients.__module__, tig.load_checkpoint.__module__, "
            "sorted(set(tig.__all__) - set(dir(tig))))")
    with tempfile.TemporaryDirectory() as outside:     # not the checkout: the installed package
        done = subprocess.run([sys.executable, "-c", code], cwd=outside, capture_output=True, text=True, timeout=120,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tig.ig", "tig.saliency", "tig.checkpoint", "[]"]
    import tig
    for name in tig.__all__:
        assert getattr(tig, name) is not None, name


def test_nothing_in_the_package_imports_a_top_level_file():
    """Dependencies point one way: the commands and the card's fronts import `tig`, never the reverse."""
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    for name, path in modules().items():
        if name.startswith("tig."):
            for node in import_nodes(path):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                up = [n for n in names if n.split(".")[0] in top | {"bench", "examples", "tests", "conftest"}]
                assert not up, (path, up)


def test_no_file_edits_the_import_path():
    """The package is installed (pip install -e .); no file edits sys.path or sets PYTHONPATH for it."""
    offenders = []
    for folder in ("", "tig", "bench", "examples", "tests"):
        for f in sorted(os.listdir(os.path.join(ROOT, folder or "."))):
            if f.endswith(".py"):
                text = open(os.path.join(ROOT, folder, f), encoding="utf-8").read()
                for needle in ("sys.path.insert", "sys.path.append", "sys.path[", "sys.path =", '"PYTHONPATH":'):
                    if needle in text and f != "test_layout.py":
                        offenders.append((os.path.join(folder, f), needle))
    assert offenders == []


def test_no_import_cycle_among_the_project_modules():
    assert cycles(graph()) == []


def test_nothing_below_a_command_imports_one():
    """The package and the card's library modules never import a command, a benchmark or an example;
    commands import no other command (benchmarks may drive commands' public functions)."""
    known = modules()
    upper = COMMANDS | {name for name, path in known.items() if path.startswith(("bench", "examples"))}
    for name, deps in graph().items():
        if name.startswith("tig.") or name in LIBRARY:
            assert not deps & upper, (name, sorted(deps & upper))
        elif name in COMMANDS:
            assert not deps & (upper - {name}), (name, sorted(deps & upper))


def test_no_module_imports_another_modules_private_names():
    known = modules()
    for name, path in known.items():
        for node in import_nodes(path):
            if isinstance(node, ast.ImportFrom) and node.module in known:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (name, node.module, private)


def test_no_file_is_longer_than_400_lines():
    long = {path: n for path in modules().values()
            if (n := len(open(os.path.join(ROOT, path), encoding="utf-8").read().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_readme_layout_names_every_module():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    layout = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`((?:tig/|bench/|examples/)?\w+\.py)`", layout))
    assert set(modules().values()) <= named, sorted(set(modules().values()) - named)
