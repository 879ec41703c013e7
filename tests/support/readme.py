"""The README's code blocks, by section: which tier runs which block."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
# Its blocks talk to the sandbox's https listener as a foreign client; tests/sandbox/test_readme_other_tools.py
# runs them. Every other ```python block is crmkit code, run by tests/notebooks/test_readme.py.
OTHER_TOOLS = "Use the sandbox from other tools"


def sections(text: str) -> dict[str, str]:
    """``## heading`` -> the text under it (up to the next ``## ``); the part before the first is under ''."""
    parts = re.split(r"^## (.+)\n", text, flags=re.M)
    found = {"": parts[0]}
    found.update(zip(parts[1::2], parts[2::2], strict=True))
    return found


def blocks(text: str, info: str) -> list[str]:
    """The fenced blocks whose info string is exactly ``info`` (``python``, ``bash``, ``text``)."""
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", text, flags=re.S | re.M)


def crmkit_python_blocks(text: str) -> list[str]:
    """The README's ```python blocks outside the other-tools section, in order."""
    return [b for heading, body in sections(text).items() if heading != OTHER_TOOLS for b in blocks(body, "python")]
