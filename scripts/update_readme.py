"""Regenerate the generated parts of README.md (the settings table)."""

from __future__ import annotations

import re
from pathlib import Path

from exasol_mlflow_server.runtime.settings import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def render(text: str) -> str:
    return re.sub(
        r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)",
        lambda m: m.group(1) + markdown_table() + "\n" + m.group(2),
        text,
        flags=re.S,
    )


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
