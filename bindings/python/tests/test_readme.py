"""The README's Python section: each of its ```python blocks runs as
written there (read from README.md, so the two cannot drift)."""

from __future__ import annotations

import os
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def _snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run(snippet: str) -> None:
    exec(compile(snippet, "<README>", "exec"), {})


def test_the_section_has_its_four_snippets():
    assert len(_snippets()) == 4


def test_run_snippet():
    _run(_snippets()[0])


def test_streaming_snippet():
    _run(_snippets()[1])


def test_async_snippet():
    _run(_snippets()[2])


def test_snapshot_snippet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(_snippets()[3])
    assert os.path.exists("python.snap")
