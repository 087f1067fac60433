"""The documentation site builds strictly, has a reference for every public module and lists every model."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import medseg_zoo as mz

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
