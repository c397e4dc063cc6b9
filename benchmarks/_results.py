"""Where the benchmark scripts put their results: ``<out>.json`` (raw figures) and ``<out>.md`` (the table)."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, results: dict, markdown: str) -> None:
    """Write ``results`` as ``<out>.json`` and ``markdown`` as ``<out>.md``, and print the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
