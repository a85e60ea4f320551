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


def _rounding_masked(text: str) -> str:
    # Errors below 1e-10 are rounding, whose digits depend on the CPU's summation order.
    return re.sub(r"\d\.\d\de-(1\d|[2-9]\d)|0\.00e\+00", "<rounding>", text)


def test_parity_compare_example_prints_what_the_readme_shows(capsys):
    section = _section("Compare layer by layer: `parity.compare`")
    (block,) = _python_blocks(section)
    shown = re.search(r"prints\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, "README.md (parity.compare)", "exec"), {})
    assert _rounding_masked(capsys.readouterr().out) == _rounding_masked(shown)
