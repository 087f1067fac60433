"""mkdocs hook: the house as it stands, drawn from the source when the site is built. Every import between the
package's modules is an arrow (lazy and type-only ones too); a room is a module, or one of the families that
live side by side (``layers``, ``models``, ``convert``, ``cli``); a room's floor is one above the highest room it
imports. ``tests/test_architecture.py`` holds the house to its rules with the same graph."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[2] / "src" / "medseg_zoo"
FAMILIES = ("layers", "models", "convert", "cli")  # packages whose modules are one room: same kind, side by side
MARKER = "<!-- rooms -->"


def modules(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its code (top level, in functions, type-only)."""
    known = modules(source)

    def resolve(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "medseg_zoo"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("medseg_zoo"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in known else resolve(node.module))
        found.discard(name)
        graph[name] = found
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1] in FAMILIES else module


def rooms(source: Path = SOURCE) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Room -> the rooms it imports, and room -> its lines of code."""
    graph: dict[str, set[str]] = {}
    lines: dict[str, int] = {}
    for module, path in modules(source).items():
        lines[room(module)] = lines.get(room(module), 0) + len(path.read_text().splitlines())
    for module, targets in imports(source).items():
        graph.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    return graph, lines


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 0 for a room that imports none, else one above the highest it imports (the graph must
    have no circle)."""
    done: dict[str, int] = {}

    def floor(name: str, path: tuple[str, ...] = ()) -> int:
        if name in path:
            raise ValueError(f"import circle: {' -> '.join((*path[path.index(name) :], name))}")
        if name not in done:
            done[name] = 1 + max((floor(t, (*path, name)) for t in graph.get(name, ())), default=-1)
        return done[name]

    for name in graph:
        floor(name)
    return done


def table(source: Path = SOURCE) -> str:
    """The rooms floor by floor, top first: lines of code and the rooms each imports."""
    graph, lines = rooms(source)
    level = floors(graph)
    short = {r: r.removeprefix("medseg_zoo.") or "medseg_zoo" for r in graph}
    rows = ["| floor | room | lines | imports |", "|---|---|---|---|"]
    for name in sorted(graph, key=lambda r: (-level[r], r)):
        targets = ", ".join(f"`{short[t]}`" for t in sorted(graph[name], key=lambda t: (-level[t], t)))
        rows.append(f"| {level[name]} | `{short[name]}` | {lines[name]} | {targets or '-'} |")
    arrows = sum(len(t) for t in graph.values())
    summary = f"{len(graph)} rooms on {max(level.values()) + 1} floors, {arrows} arrows, no circle."
    return summary + "\n\n" + "\n".join(rows)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, table())
    return markdown
