"""``--help`` reads as plain text for every verb and sub-verb, walked from the parser the command
line builds (so a new verb is covered the day it is registered): no RST markup, a description of
its own (not the parent's repeated), help for every argument, and each option's default shown."""
from __future__ import annotations

import argparse
import re

import pytest

from craft_plugin.cli import build_parser, main

# RST a docstring may carry into --help: ``literal``, `interpreted`, :role:`x`, `link`_, .. directive::
RST = re.compile(r"`|:[a-z]+:`|^\s*\.\. [a-z-]+::", re.MULTILINE)


def walk(parser: argparse.ArgumentParser, path=(), parent=None):
    """``(command words, parser, parent parser)`` for the root and every verb and sub-verb below it."""
    yield path, parser, parent
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, path + (name,), parser)


def documented_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


PARSERS = {" ".join(path) or "(root)": (path, parser, parent) for path, parser, parent in walk(build_parser())}


def help_text(path, capsys) -> str:
    """What ``craft-plugin PATH --help`` prints, through the real entry point."""
    with pytest.raises(SystemExit) as stop:
        main(list(path) + ["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_the_walk_reaches_the_sub_verbs():
    assert {"rec pack", "bin pack", "demo", "patch"} <= set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_has_no_rst_markup(name, capsys):
    text = help_text(PARSERS[name][0], capsys)
    found = RST.search(text)
    assert found is None, f"craft-plugin {name} --help shows RST markup {found.group()!r}:\n{text}"


@pytest.mark.parametrize("name", sorted(set(PARSERS) - {"(root)"}))
def test_each_verb_has_a_description_of_its_own(name):
    _, parser, parent = PARSERS[name]
    assert parser.description and parser.description.strip(), f"craft-plugin {name} has no description"
    assert parser.description.strip() != (parent.description or "").strip(), \
        f"craft-plugin {name} repeats its parent's description"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_argument_has_help_and_shows_its_default(name):
    _, parser, _ = PARSERS[name]
    formatter = parser._get_formatter()
    for action in documented_actions(parser):
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS and action.help.strip(), \
            f"craft-plugin {name}: {label} has no help"
        shown = formatter._expand_help(action)
        takes_value = action.option_strings and action.nargs != 0   # a flag's absence is its default
        if takes_value and action.default is not None and action.default is not argparse.SUPPRESS:
            assert "default" in shown and str(action.default) in shown, \
                f"craft-plugin {name}: {label} does not show its default {action.default!r}: {shown!r}"
    for choice in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        listed = {c.dest: c.help for c in choice._choices_actions}
        assert set(listed) == set(choice.choices) and all(h and h.strip() for h in listed.values()), \
            f"craft-plugin {name}: a sub-verb without a one-line help in the list: {listed}"


def test_defaults_are_shown_from_the_option_and_flags_show_none(capsys):
    text = " ".join(help_text(("demo",), capsys).split())
    parser = PARSERS["demo"][1]
    defaults = {a.dest: a.default for a in parser._actions}
    assert f"(default {defaults['identities']})" in text and f"(default {defaults['seed']})" in text
    assert "(default False)" not in text and "(default None)" not in text
    ijb = " ".join(help_text(("eval", "ijb"), capsys).split())
    assert "mirror image's (default" not in ijb and "(default True)" not in ijb   # --no-flip: a flag
    assert "bootstrap (default 0)" in " ".join(help_text(("eval", "compare"), capsys).split())  # a default of 0


def test_a_help_without_its_default_is_caught():
    """The check above can fail: an option that says nothing of its default is reported."""
    parser = argparse.ArgumentParser(formatter_class=argparse.HelpFormatter)
    action = parser.add_argument("--size", type=int, default=7, help="a size")
    assert "default" not in parser._get_formatter()._expand_help(action)
    assert RST.search("reads ``train.rec``") and RST.search("see :class:`X`") and not RST.search("a 'quoted' word")
