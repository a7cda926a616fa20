"""--help of every script: a whole-paragraph description, help text for every flag, defaults shown."""
import argparse
import importlib
import os
import re

import pytest

from tig import cli
SCRIPTS = ("train", "visualize", "evaluate", "serve", "bench_ig", "bench_train", "bench_corpus", "gallery", "explain",
           "keras_io_example", "compare_fasttext", "compare_captum", "checkpoint_sizes", "choose_erasure")


def script_path(script):
    """Where a command lives: the top level, bench/ or examples/ (relative to the repo root)."""
    from conftest import ROOT
    found = [p for p in (f"{script}.py", f"bench/{script}.py", f"examples/{script}.py") if os.path.exists(os.path.join(ROOT, p))]
    assert len(found) == 1, (script, found)
    return found[0]


class Captured(Exception):
    pass


def parser_of(script, monkeypatch):
    """The ArgumentParser a script builds, caught when it would parse (no work is done)."""
    def catch(self, *args, **kwargs):
        raise Captured(self)
    monkeypatch.setattr(cli.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(cli.ArgumentParser, "parse_known_args", catch)
    module = importlib.import_module(script)
    entry = getattr(module, "parse_args", None) or module.main
    with pytest.raises(Captured) as caught:
        entry([]) if entry.__code__.co_argcount else entry()
    return caught.value.args[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_help_and_its_default(script, monkeypatch):
    parser = parser_of(script, monkeypatch)
    parsers = [parser] + [sub for action in parser._actions if isinstance(action.choices, dict)
                          for sub in action.choices.values()]     # subcommands
    for p in parsers:
        text = p.format_help()
        for action in p._actions:
            if action.option_strings:
                assert action.help, f"{script} {action.option_strings[0]} has no help text"
        for action in p._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                    and action.help != argparse.SUPPRESS:
                shown = ",".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
                assert "default" in action.help.lower() or f"(default:{shown})".replace(" ", "") in "".join(text.split()), \
                    f"{script} {action.option_strings[0]}: default {shown} not shown"
    description = " ".join(parser.description.split())
    assert re.search(r"[.)?]$", description), f"{script}: the description stops mid-sentence: {description!r}"


ALL_SCRIPTS = SCRIPTS + ("bench_steps", "keras_hub_example")


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_help_parses_before_tensorflow_is_imported(script):
    """--help (and a usage error) never waits for TensorFlow: arguments are parsed before it is
    imported, so it returns in about a second whatever the machine is doing. Checked in a fresh
    interpreter by what got imported, not by a clock."""
    import subprocess
    import sys
    path = script_path(script)
    probe = (f"import sys, runpy; sys.argv = [{path!r}, '--help']\n"
             f"try:\n    runpy.run_path({path!r}, run_name='__main__')\n"
             "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
             "heavy = sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'jieba') if m in sys.modules)\n"
             "print('imported:', heavy)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout, result.stdout[-300:]
