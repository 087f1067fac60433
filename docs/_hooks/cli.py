"""mkdocs hook: the command-line reference, generated from the argparse parsers when the site is built, so it lists
every command and option the code has and nothing else."""

from __future__ import annotations

import argparse

from mkdocs.structure.files import File

from medseg_zoo.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices.items())


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next((c.help for c in action._choices_actions if c.dest == name), "") or ""


def _option_rows(command: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | what | default |", "|---|---|---|"]
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}` (positional)"
        what = (action.help or "").replace("|", "\\|").replace("\n", " ")
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            what += f" Choices: {', '.join(f'`{c}`' for c in action.choices)}."
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.required else f"`{default}`"
        if action.required:
            shown = "required"
        rows.append(f"| {names} | {what.strip()} | {shown} |")
    return rows


def reference() -> str:
    """The markdown page: every command, its usage, options and examples."""
    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated from the `medseg-zoo` command's own parsers when this site is built. Every command prints the "
        "same with `--help`; errors are one line starting `medseg-zoo: error:` and exit with status 2.",
        "",
    ]
    for name, command in _subcommands(parser).items():
        usage = command.format_usage().strip().removeprefix("usage: ")
        lines += [f"## {name}", "", _help_of(parser, name), "", "```text", usage, "```", "", *_option_rows(command), ""]
        if command.epilog:
            lines += ["```text", command.epilog.strip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):
    files.append(File.generated(config, "cli.md", content=reference()))
    return files
