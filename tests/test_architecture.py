"""The package keeps the shape docs/architecture.md describes: layers, no cycles, small parts."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.check_architecture import cycles, problems  # noqa: E402


def test_no_breach_of_the_layout() -> None:
    """No import against the layers, no import cycle, no function over 80 lines, no module
    over 700."""
    assert problems() == []


def test_the_checker_finds_a_cycle() -> None:
    """The cycle finder reports a two-module cycle and a self-import, and nothing in a chain."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"c"}, "d": {"e"}, "e": set()}) == [
        ["a", "b"],
        ["c"],
    ]


def test_every_package_is_named_in_the_architecture_page() -> None:
    """docs/architecture.md names every subpackage of repobackup."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    packages = [
        p.name for p in (ROOT / "src" / "repobackup").iterdir() if (p / "__init__.py").exists()
    ]
    assert packages
    assert [p for p in packages if f"`{p}/`" not in page] == []
