"""The layout the README promises: no import cycle among the project's modules (imports inside
functions count), no file over 400 lines, and every module named in the README's Layout table."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 400


def modules():
    return sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))


def imports_of(name, known):
    """Project modules that `name` imports anywhere in its file (top level or inside functions)."""
    tree = ast.parse(open(os.path.join(ROOT, name + ".py"), encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return (found & known) - {name}


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


def test_no_import_cycle_among_the_project_modules():
    known = set(modules())
    graph = {name: imports_of(name, known) for name in known}
    assert cycles(graph) == []


def test_no_file_is_longer_than_400_lines():
    long = {name: n for name in modules()
            if (n := len(open(os.path.join(ROOT, name + ".py"), encoding="utf-8").read().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_readme_layout_names_every_module():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    layout = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`(\w+)\.py`", layout))
    assert set(modules()) <= named, sorted(set(modules()) - named)
