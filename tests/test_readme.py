"""The README's runnable examples run, and do what they say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}")
    end = text.find("\n## ", start + 1)
    nxt = text.find("\n### ", start + 1)
    return text[start : min(i for i in (end, nxt, len(text)) if i != -1)]


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_jaxnets_nn_port_example_runs():
    blocks = _python_blocks(_section("Torch-mirror layers: `jaxnets.nn`"))
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md (jaxnets.nn)", "exec"), {})
