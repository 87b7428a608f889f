"""The README's "Python services" section quotes the FastAPI example's wiring: the two must not
part ways."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "python" / "examples" / "fastapi_profiles" / "app.py"
README = ROOT / "README.md"


def wiring() -> str:
    """The lines between the example's two wiring markers, dedented."""
    text = APP.read_text(encoding="utf-8")
    found = re.search(r"# staleless: wiring starts\n(.*?)\n\s*# staleless: wiring ends", text, re.DOTALL)
    assert found is not None, f"no wiring markers in {APP}"
    return textwrap.dedent(found.group(1)).strip("\n")


def test_the_readme_quotes_the_example_wiring_as_it_is() -> None:
    readme = README.read_text(encoding="utf-8")
    blocks = [block.strip("\n") for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)]
    assert wiring() in blocks, "README.md's Python wiring block differs from app.py's; copy it again"


def test_the_wiring_stays_about_twenty_lines() -> None:
    lines = [line for line in wiring().splitlines() if line.strip()]
    assert len(lines) <= 20, f"{len(lines)} lines of wiring"
    assert f"{len(lines)} lines" in README.read_text(encoding="utf-8"), "the README states the count"
