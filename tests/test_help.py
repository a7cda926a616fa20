"""--help of every script: a whole-paragraph description, help text for every flag, defaults shown."""
import argparse
import importlib
import re

import pytest

import cli

SCRIPTS = ("train", "visualize", "evaluate", "bench", "bench_train", "bench_corpus", "gallery", "explain",
           "keras_io_example", "compare_fasttext", "checkpoint_sizes")


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
