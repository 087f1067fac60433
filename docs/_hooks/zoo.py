"""mkdocs hook: the model-zoo table and one model card per configuration, generated from the registry when the
site is built, so the pages never drift from the code."""

from __future__ import annotations

from urllib.parse import urlparse

from mkdocs.structure.files import File

from medseg_zoo._factory import count_parameters
from medseg_zoo._registry import get_config, list_models
from medseg_zoo.hub import model_card

MARKER = "<!-- model-table -->"


def _weights(name: str) -> str:
    cfg = get_config(name)
    if cfg.has_weights:
        source = next(w for w in cfg.weights if w.published)
        return f"Hub `{source.repo_id}`" if source.repo_id else f"download from {urlparse(source.url).hostname}"
    return "planned" if cfg.weights else "-"


def _row(name: str) -> str:
    cfg = get_config(name)
    c = cfg.contract
    io = "given by the caller"
    if c:
        outputs = ", ".join(c.out_channels) if len(c.out_channels) <= 4 else f"{len(c.out_channels)} classes"
        io = f"{', '.join(c.in_channels)} -> {outputs} ({c.activation})"
    roi = "x".join(map(str, c.roi_size if c else cfg.default_roi))
    spacing = "x".join(f"{s:g}" for s in c.spacing) if c and c.spacing else "input's"
    metrics = ", ".join(f"{k} {v}" for k, v in cfg.metrics.items() if k != "data")
    measured = f"{metrics} ({cfg.metrics['data']})" if "data" in cfg.metrics else metrics or "-"
    architecture = cfg.builder.__name__
    return (
        f"| [`{name}`](models/{name}.md) | {architecture} | {count_parameters(name) / 1e6:.1f} M | {io} | {roi} | "
        f"{spacing} | {_weights(name)} | {cfg.license or '-'} | {measured} |"
    )


def table() -> str:
    """The markdown table of every registered configuration."""
    head = [
        "| name | architecture | parameters | inputs -> outputs | roi | spacing (mm) | weights | license | reported |",
        "|---|---|---:|---|---|---|---|---|---|",
    ]
    return "\n".join([*head, *(_row(name) for name in list_models())])


def on_files(files, config):
    for name in list_models():
        cfg = get_config(name)
        if cfg.contract:
            content = model_card(cfg, count_parameters(name), sources=True)
        else:
            content = f"# {name}\n\nA generic architecture ({cfg.architecture}). {cfg.notes}\n\n{cfg.paper}\n"
        files.append(File.generated(config, f"models/{name}.md", content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace(MARKER, table()) if MARKER in markdown else markdown
