"""Shared helpers of the benchmarks: a docs/benchmarks.md section with its command and machine, written atomically."""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch


def machine() -> str:
    """One line naming the CPU, cores, torch threads and versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    return (
        f"{cpu} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}, {platform.system()}"
    )


def command() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the section ``name`` of ``path`` (between HTML comment markers), or append it; atomically."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def publish(lines: list[str], output: Path | None, name: str) -> None:
    """Print a section's lines followed by the command and the machine; write it to ``output`` if given."""
    body = "\n".join([*lines, "", f"Command: `{command()}`  ", f"Machine: {machine()}"])
    print(body)
    if output:
        write_section(output, name, body)
