"""The documentation site builds strictly, has a reference for every public module and lists every model."""

import importlib
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import medseg_zoo as mz
from medseg_zoo.cli import build_parser

ROOT = Path(__file__).parents[1]


def _public_modules() -> list[str]:
    """Modules with a non-empty ``__all__`` (the command line is documented as commands, not as a module)."""
    names = [m.name for m in pkgutil.walk_packages(mz.__path__, "medseg_zoo.")]
    names = [
        n for n in names if not any(p.startswith("_") for p in n.split(".")) and not n.startswith("medseg_zoo.cli")
    ]
    return [n for n in names if getattr(importlib.import_module(n), "__all__", None)]


def test_site(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = "\n".join(p.read_text() for p in site.rglob("*.html"))
    missing = [m for m in _public_modules() if f'id="{m}' not in html]
    assert not missing, f"no reference for {missing}"
    table = (site / "models" / "index.html").read_text()
    for name in mz.list_models():
        assert f'href="{name}/"' in table, name
        assert (site / "models" / name / "index.html").is_file()
    assert "unet_brats_small" in (site / "models" / "unet_brats_small" / "index.html").read_text()


def _shell_commands(text: str) -> list[str]:
    """``medseg-zoo ...`` command lines of the bash blocks (continuations joined, comments dropped); torchrun's
    ``-m medseg_zoo ...`` as the command it runs."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            line = re.sub(r"^HF_HUB_OFFLINE=1 ", "", line)
            if " -m medseg_zoo " in line:
                line = "medseg-zoo " + line.split(" -m medseg_zoo ", 1)[1]
            if line.startswith("medseg-zoo "):
                commands.append(line)
    return commands


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shell_command_on_the_site_parses(page):
    """Commands and options that the parsers do not have would fail a reader: each one parses."""
    from medseg_zoo.cli import _join_negative_values, build_parser

    parser = build_parser()
    for command in _shell_commands(page.read_text()):
        argv = shlex.split(command)[1:]
        try:
            parser.parse_args(_join_negative_values(argv))
        except SystemExit as exc:
            pytest.fail(f"{page.name}: `{command}` does not parse (exit {exc.code})")


def test_the_cli_reference_lists_every_command_and_option():
    from docs._hooks.cli import _subcommands, reference

    page = reference()
    for name, command in _subcommands(build_parser()).items():
        assert f"## {name}" in page
        for action in command._actions:
            for option in [] if action.dest == "help" else action.option_strings:
                assert f"`{option}`" in page, (name, option)
