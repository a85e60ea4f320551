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


def test_real_models_ported_example_runs():
    (block,) = _python_blocks(_section("Real models ported (work in progress)"))
    exec(compile(block, "README.md (jaxnets.ports)", "exec"), {})


def _rounding_masked(text: str) -> str:
    # Errors below 1e-10 are rounding, whose digits depend on the CPU's summation order.
    return re.sub(r"\d\.\d\de-(1\d|[2-9]\d)|0\.00e\+00", "<rounding>", text)


def test_parity_compare_example_prints_what_the_readme_shows(capsys):
    section = _section("Compare layer by layer: `parity.compare`")
    (block,) = _python_blocks(section)
    shown = re.search(r"prints\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, "README.md (parity.compare)", "exec"), {})
    assert _rounding_masked(capsys.readouterr().out) == _rounding_masked(shown)


def test_optimizer_example_prints_what_torch_computes(capsys):
    import torch

    section = _section("Optimizers with PyTorch semantics")
    (block,) = _python_blocks(section)
    shown = re.search(r"`optimizer.state\[p\]\[\"ax\"\]`:\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, "README.md (jaxnets.optim)", "exec"), {})
    printed = capsys.readouterr().out
    assert printed == shown
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = torch.optim.ASGD([p], lr=0.1, t0=0, maximize=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    for _ in range(3):
        p.grad = torch.tensor([0.5, 0.5])
        optimizer.step()
        scheduler.step()
    print(p.detach().numpy(), optimizer.state[p]["ax"].numpy())
    assert capsys.readouterr().out == printed


def test_porting_walkthrough_prints_what_the_readme_shows(capsys):
    section = _section("Porting a model of your own")
    block = _python_blocks(section)[0]
    shown = re.search(r"depend on the CPU\)\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, "README.md (porting)", "exec"), {})
    printed = capsys.readouterr().out
    assert _rounding_masked(printed) == _rounding_masked(shown)
    assert "all layers agree" in printed
