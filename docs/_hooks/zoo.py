"""mkdocs hook: the model-zoo table and one model card per configuration, generated from the registry when the
site is built, so the pages never drift from the code."""

from __future__ import annotations

from urllib.parse import urlparse

from mkdocs.structure.files import File
from mkdocs.structure.nav import Section
from mkdocs.structure.pages import Page

from medseg_zoo._factory import count_parameters
from medseg_zoo._registry import get_config, list_models
from medseg_zoo.hub import model_card
from medseg_zoo.transforms.labels import get_scheme, list_schemes

MARKER = "<!-- model-table -->"
SCHEMES = "<!-- scheme-table -->"


def _weights(name: str) -> str:
    cfg = get_config(name)
    if cfg.members:
        return f"ensemble of {len(cfg.members)}"
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


def scheme_table() -> str:
    """The markdown table of every built-in label scheme."""
    rows = ["| name | edition | labels | outputs |", "|---|---|---|---|"]
    for name in list_schemes():
        s = get_scheme(name)
        labels = ", ".join(f"{v} {n}" for v, n in sorted(s.labels.items()))
        if len(s.labels) > 8:
            labels = f"{len(s.labels)} labels (0 background, 1 {s.labels[1]}, ...)"
        if s.regions:
            regions = ", ".join(f"{r} = {{{', '.join(map(str, v))}}}" for r, v in s.regions.items())
            outputs = f"sigmoid regions {regions}"
        else:
            outputs = f"softmax over {len(s.labels)} classes"
        rows.append(f"| `{name}` | {s.edition} | {labels} | {outputs} |")
    return "\n".join(rows)


def _card(name: str) -> str:
    cfg = get_config(name)
    if cfg.contract:
        return model_card(cfg, count_parameters(name), sources=True)
    return (
        f"# {name}\n\nA generic architecture (`{cfg.architecture}`, {count_parameters(name) / 1e6:.1f} M parameters "
        f"with 1 input and 2 outputs). {cfg.notes}\n\n{cfg.paper}\n\n## Use\n\n```python\nfrom medseg_zoo import "
        f'create_model\nmodel = create_model("{name}", in_channels=["CT"], out_channels=2)\n```\n'
    )


def on_files(files, config):
    for name in list_models():
        files.append(File.generated(config, f"models/{name}.md", content=_card(name)))
    return files


def on_nav(nav, config, files):
    """The model cards as a section of the navigation, right after the model-zoo table."""
    cards = [Page(name, files.get_file_from_path(f"models/{name}.md"), config) for name in list_models()]
    section = Section("Model cards", cards)
    index = next(i for i, item in enumerate(nav.items) if getattr(item, "title", "") == "Model zoo")
    nav.items.insert(index + 1, section)
    nav.pages[:] = [*nav.pages, *cards]
    return nav


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, table())
    if SCHEMES in markdown:
        markdown = markdown.replace(SCHEMES, scheme_table())
    return markdown
