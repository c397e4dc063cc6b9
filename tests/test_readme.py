"""The README's drop-in example runs exactly as printed."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_the_drop_in_example():
    blocks = [b for b in python_blocks() if "AdversarialDistillation(teacher, student)" in b]
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 35


@pytest.mark.slow
def test_drop_in_example_runs_as_printed(tmp_path, monkeypatch, capsys):
    (block,) = [b for b in python_blocks() if "AdversarialDistillation(teacher, student)" in b]
    script = tmp_path / "example.py"
    script.write_text(block)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert "val/agreement" in capsys.readouterr().out
    assert (tmp_path / "student.pt").is_file()
