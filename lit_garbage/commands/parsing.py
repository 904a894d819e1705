"""One parser family for the commands: a command's options are a dataclass, read by jsonargparse as `fit` is.

    parser = config_parser(ExportConfig, prog="lit-garbage export", description=..., epilog=EXAMPLES,
                           renamed={"--ckpt": "--model", "--no-verify": "--verify=false"})  # earlier spellings
    args = parser.parse_args(argv)                        # a malformed option: usage, one line, exit status 2
    broken = config_problems(parser, argv, args, RULES)   # out of bounds: one line each, before any model loads
    config = make_config(parser, args, ExportConfig)

Every option is `--key value` (a group's: `--int8.float_convs 8`), or a key of a YAML file (`--config x.yaml`;
`--print_config` writes every option as such a file), or both: the command line wins. Yes/no options also work
bare, as argparse's flags did (`--verbose` is `--verbose true`; `Parser.spelled`). Defaults and help come from the
dataclass (each field's docstring).

The spellings of earlier releases (`--ckpt`, `--calib-images`, `--no-verify`, `--data ROOT`) still work, unlisted:
`renamed` maps each to its new name and they are rewritten before jsonargparse parses. (Not hidden jsonargparse
options: one sharing an option's key takes that key out of `--print_config`; and `--data` is already the data
group's own file option.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from jsonargparse import (
    ActionConfigFile,
    ArgumentParser,
    DefaultHelpFormatter,
    Namespace,
    set_parsing_settings,
)

from lit_garbage.checks import Rule

UNSET = object()
YES_NO = {"true", "false", "yes", "no"}  # the values a yes/no option takes


class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (type and default of every option) with the epilog's examples kept as written."""


class Parser(ArgumentParser):
    """jsonargparse's parser whose errors are one line, with argparse's words for a missing option."""

    def __init__(self, *args: Any, renamed: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=Formatter, **kwargs)
        self.renamed = dict(renamed or {})

    def parse_args(self, args: Sequence[str] | None = None, *more: Any, **kwargs: Any) -> Namespace:
        return super().parse_args(self.spelled(args), *more, **kwargs)

    def spelled(self, args: Sequence[str] | None) -> list[str]:
        """`args` with earlier spellings renamed and each bare yes/no option given its value: `--quiet photos/`
        is `--quiet=true photos/` (argparse alone would read `photos/` as the option's value)."""
        args = renamed_args(self.renamed, args)
        flags = {s for a in self._actions if getattr(a, "_typehint", None) is bool for s in a.option_strings}
        following = [*args[1:], None]
        return [f"{arg}=true" if arg in flags and str(after).lower() not in YES_NO else arg
                for arg, after in zip(args, following)]

    def error(self, message: str, ex: Exception | None = None):
        message = " ".join(message.split())  # jsonargparse's are indented over several lines
        if message.startswith("the following arguments are required: "):
            head, names = message.split(": ", 1)
            message = f"{head}: " + ", ".join(f"--{name}" for name in names.split(", "))
        super().error(message, ex)


def renamed_args(renamed: Mapping[str, str], args: Sequence[str] | None) -> list[str]:
    """`args` (default: the command line's) with each old name in `renamed` spelled as its new one: `--ckpt X`
    -> `--model X`, `--ckpt=X` -> `--model=X`; a flag renamed to `--key=value` is replaced whole (`--no-verify`
    -> `--verify=false`)."""
    out = []
    for arg in sys.argv[1:] if args is None else args:
        name, eq, value = str(arg).partition("=")
        new = renamed.get(name)
        out.append(arg if new is None else new if "=" in new else new + eq + value)
    return out


def config_parser(config: type, *, prog: str, description: str, epilog: str, skip: Iterable[str] = (),
                  renamed: Mapping[str, str] | None = None) -> Parser:
    """The parser of a command whose options are the dataclass `config` (fields in `skip` are added by hand),
    with `--config FILE` and `--print_config`."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # each field's docstring is its help
    p = Parser(prog=prog, description=description, epilog=epilog, renamed=renamed)
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of options (--print_config writes one)")
    p.add_class_arguments(config, skip=set(skip), sub_configs=False)
    for old in p.renamed:  # e.g. the data group's own file option, `--data`: the old name reads as its new one
        if old in p._option_string_actions:
            p._option_string_actions[old].help = argparse.SUPPRESS
    return p


def config_problems(p: ArgumentParser, argv: Sequence[str] | None, args: Namespace, rules: Iterable[Rule]) -> list[str]:
    """One line per broken rule, naming the option as the user wrote it (`--calib-images`, `--int8.calib_images`)
    or, when it came from a config file, its key (`int8.calib_images`)."""
    written = [str(a).partition("=")[0] for a in (sys.argv[1:] if argv is None else argv)]
    out = []
    for rule in rules:
        key = rule.key.lstrip("-").replace("-", "_")  # a flag-keyed rule (`--batch-size`) reads its option's key
        value = args.get(key, UNSET)
        if value is UNSET:
            continue
        spellings = {s for a in p._actions if a.dest == key for s in a.option_strings} | \
            {old for old, new in getattr(p, "renamed", {}).items() if new.partition("=")[0].lstrip("-") == key}
        shown = next((name for name in reversed(written) if name in spellings), key)
        problem = Rule(shown, rule.holds, rule.must, rule.hint).problem(value)
        if problem:
            out.append(problem)
    return out


def make_config(p: ArgumentParser, args: Namespace, config: type) -> Any:
    """The dataclass `config` (its groups too) from the parsed `args`; a field they lack keeps its default."""
    made = p.instantiate(args)
    return config(**{f.name: made[f.name] for f in fields(config) if f.name in made})
