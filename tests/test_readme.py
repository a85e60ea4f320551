"""The README's and the documentation pages' runnable examples run, and do what they say.

The project's text lives in ``docs/*.md`` (the site ``make docs`` builds); ``README.md`` is the
short front page that links there and quotes the headline figures. The examples that print are
compared with what their page shows; the README's figures are checked against the pages that
measured them, and its links against the files they name.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _headings(text: str):
    """(line index, level, title) of every markdown heading outside fenced code blocks."""
    fence = False
    for i, line in enumerate(text.split("\n")):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"(#{1,6}) (.*)", line)):
            yield i, len(m.group(1)), m.group(2).strip()


def _section(page: str, title: str) -> str:
    """The text of ``page`` (a path from the repository root) under the heading ``title``.

    Up to the next heading of any level; a ``# comment`` in a code block is no heading.
    """
    text = (ROOT / page).read_text()
    headings = list(_headings(text))
    found = [(i, level) for i, level, t in headings if t == title]
    assert len(found) == 1, f"{page}: {len(found)} headings {title!r}; headings: {[t for *_, t in headings]}"
    start = found[0][0]
    end = next((i for i, _, _ in headings if i > start), None)
    lines = text.split("\n")
    return "\n".join(lines[start:end])


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_jaxnets_nn_port_example_runs():
    page = "docs/torch-mirror-layers.md"
    blocks = _python_blocks(_section(page, "Torch-mirror layers: `jaxnets.nn`"))
    assert len(blocks) == 1
    exec(compile(blocks[0], f"{page} (jaxnets.nn)", "exec"), {})


def test_real_models_ported_example_runs():
    page = "docs/porting.md"
    (block,) = _python_blocks(_section(page, "Real models ported"))
    exec(compile(block, f"{page} (jaxnets.ports)", "exec"), {})


def _rounding_masked(text: str) -> str:
    # Errors below 1e-10 are rounding, whose digits depend on the CPU's summation order.
    return re.sub(r"\d\.\d\de-(1\d|[2-9]\d)|0\.00e\+00", "<rounding>", text)


def test_parity_compare_example_prints_what_the_docs_show(capsys):
    page = "docs/parity.md"
    section = _section(page, "Compare layer by layer: `parity.compare`")
    (block,) = _python_blocks(section)
    shown = re.search(r"prints\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, f"{page} (parity.compare)", "exec"), {})
    assert _rounding_masked(capsys.readouterr().out) == _rounding_masked(shown)


def test_optimizer_example_prints_what_torch_computes(capsys):
    import torch

    page = "docs/optimizers.md"
    section = _section(page, "Optimizers with PyTorch semantics")
    (block,) = _python_blocks(section)
    shown = re.search(r"`optimizer.state\[p\]\[\"ax\"\]`:\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, f"{page} (jaxnets.optim)", "exec"), {})
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


@pytest.mark.slow  # the porting page's whole walk-through (about 6 s)
def test_porting_walkthrough_prints_what_the_docs_show(capsys):
    page = "docs/porting.md"
    section = _section(page, "Porting a model of your own")
    block = _python_blocks(section)[0]
    shown = re.search(r"depend on the CPU\)\n\n```\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, f"{page} (porting)", "exec"), {})
    printed = capsys.readouterr().out
    assert _rounding_masked(printed) == _rounding_masked(shown)
    assert "all layers agree" in printed


# -- The README: its links, commands and figures (text only: milliseconds) ----------------------


def test_readme_fits_on_two_screens():
    assert len(README.read_text().splitlines()) <= 150


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_readme_links_name_files_that_exist():
    links = _links(README.read_text())
    assert len(links) >= 10, links
    missing = [t for t in links if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")] + [
        p.relative_to(DOCS).as_posix() for p in (DOCS / "tutorials").glob("*.py")
    ]
    assert not [p for p in pages if f": {p}\n" not in nav], "docs pages missing from mkdocs.yml's nav"
    # The pages hold the text themselves: nothing is included from the README any more (docs/ports.md
    # includes source files, which is what it shows).
    assert not [p for p in DOCS.rglob("*.md") if re.search(r'--8<-- "README', p.read_text())]


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"(?:`|^)make ([\w-]+)", README.read_text(), re.M))
    assert named and named <= targets, named - targets


def _bench_ratios() -> dict[tuple[str, int, str], str]:
    """Speed-ups over torch eager in the benchmark page's table: (workload, batch, impl) -> '2.24x'."""
    table = _section("docs/benchmark.md", "Latest results")
    row = r"^(\w+)\s+(\d+)\s+(jaxnets-jit|jaxnets-scan)\s+[\d.]+\s+\d+\s+([\d.]+x)\s"
    return {(m[1], int(m[2]), m[3]): m[4] for m in re.finditer(row, table, re.M)}


def test_readme_speed_figures_are_the_benchmark_pages():
    ratios = _bench_ratios()
    assert len(ratios) >= 20, ratios
    measured = _section("README.md", "Measured")
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \|$", measured, re.M)
    rows = [r for r in rows if r[0] not in ("workload", "---")]
    assert len(rows) == 7, rows
    for name, step, loop in rows:
        batch = int(name.rsplit(" ", 1)[1])
        ported = {"Transformer encoder": "transformer_train", "ResNet-18": "resnet18_train"}
        if any(name.startswith(model) for model in ported):
            workload = next(w for model, w in ported.items() if name.startswith(model))
            assert (step, loop) == (ratios[workload, batch, "jaxnets-jit"], "-"), name  # no whole-loop row
        elif name.startswith("two-layer"):
            for impl, shown in [("jaxnets-jit", step), ("jaxnets-scan", loop)]:
                values = sorted(
                    (float(v[:-1]), v) for (w, b, i), v in ratios.items() if w.startswith("two_layer") and i == impl
                )
                assert shown == f"{values[0][1]} to {values[-1][1]}", (name, impl)
        else:
            workload = "lenet_train" if "training" in name else "lenet_forward"
            assert (step, loop) == (ratios[workload, batch, "jaxnets-jit"], ratios[workload, batch, "jaxnets-scan"]), (
                name
            )
    latest = _section("docs/benchmark.md", "Latest results")
    date = re.search(r"\d{4}-\d\d-\d\d", measured).group(0)
    assert f"Measured {date} on this project's machine (a shared 2-core AMD EPYC VM\nwith AVX-512, no GPU" in latest
    assert "shared 2-core AMD EPYC VM\nwith AVX-512 and no GPU" in measured
    end_to_end = _section("docs/benchmark.md", "End to end: jaxnets train against a PyTorch script")
    warm, jax_s, torch_s, cold = re.search(
        r"is (\S+x) a plain PyTorch eager script of the same job with a warm compilation cache "
        r"\((\S+) s against (\S+) s[;)].*?\) and (\S+x) cold",
        " ".join(measured.split()),  # as wrapped in the README
    ).groups()
    assert f"is {warm} the script warm,\nand {cold} cold" in end_to_end
    assert f"| {jax_s} s |" in end_to_end and f"| {torch_s} s |" in end_to_end


def test_readme_make_test_times_are_the_development_pages():
    quick_start = _section("README.md", "Quick start")
    first, second, date, day = re.search(
        r"`make test` took (\d+ min \d+ s) to (\d+ min \d+ s) on (\d{4}-\d\d-)\d\d and (\d\d)",
        quick_start.replace("\n", " "),
    ).groups()
    development = " ".join((ROOT / "docs" / "development.md").read_text().split())
    assert date + day in development and f"{first}, " in development and f"{second}, " in development


def test_readme_parity_and_training_figures_are_the_docs():
    measured = _section("README.md", "Measured")
    parity_page = (DOCS / "parity.md").read_text()
    rows = re.search(r"# (\d+) rows: model x check x dtype", parity_page).group(1)
    quoted = re.findall(r"(\d+) rows", README.read_text())
    assert len(quoted) == 2 and set(quoted) == {rows}, (quoted, rows)
    worst = re.search(r"seeds 0 to 9 is (\S+)\)", measured).group(1)
    assert (
        f"float64:\n1e-12 for every row, 500-step trajectories included (the worst row over seeds\n0 to 9 is {worst}"
        in parity_page
    )
    assert "float32 outputs and gradients: 1e-5" in parity_page
    train = _section("README.md", "`jaxnets train`")
    training_page = (DOCS / "training.md").read_text()
    low, high = re.search(
        r"reaches (\S+)% to (\S+)% test accuracy over seeds 0 to 4", train.replace("\n", " ")
    ).groups()
    assert f"LeNet reaches {low}% to {high}% test accuracy over seeds 0\nto 4" in training_page
    assert "in about 5 s with a warm compilation cache" in train.replace("\n", " ")
    assert "the whole command takes about 5 s\nwith the compilation cache warm" in training_page


# -- The README's own examples, run (slow: a whole training, the parity rows) -------------------


@pytest.mark.slow
def test_readme_library_example_trains(capsys):
    (block,) = _python_blocks(_section("README.md", "The library"))
    namespace: dict = {}
    exec(compile(block, "README.md (the library)", "exec"), namespace)
    losses = namespace["losses"]
    # It trained: on these random images and labels 2.306 -> 2.028 (measured); chance level is ln 10 = 2.303.
    assert losses.shape == (100,) and float(losses[-1]) < float(losses[0]) - 0.1
    assert capsys.readouterr().out == f"loss {float(losses[0]):.3f} -> {float(losses[-1]):.3f}\n"


def _commands(section: str) -> list[list[str]]:
    """The README's shell lines as argument lists, run with this environment's executables."""
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    env_bin = Path(sys.executable).parent
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [
        [str(env_bin / a.removeprefix(".venv/bin/")) if a.startswith(".venv/bin/") else a for a in shlex.split(line)]
        for line in lines
        if line
    ]


@pytest.mark.slow
def test_readme_jaxnets_train_commands_reach_the_quoted_accuracy(tmp_path):
    section = _section("README.md", "`jaxnets train`")
    commands = _commands(section)
    assert [c[1] for c in commands] == ["train", "evaluate", "export"]
    outputs = []
    for command in commands:
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    low, high = (float(v) for v in re.search(r"reaches (\S+)% to (\S+)%", section.replace("\n", " ")).groups())
    accuracy = float(re.search(r"accuracy (\d+\.\d+)%", outputs[1]).group(1))
    assert low <= accuracy <= high  # the default seed is 0, one of the seeds the README's range covers
    import safetensors.torch

    from parity.torch_models import Net

    Net().load_state_dict(safetensors.torch.load_file(tmp_path / "lenet.safetensors"), strict=True)


@pytest.mark.slow
def test_readme_parity_command_passes():
    (command,) = _commands(_section("README.md", "`python -m parity`"))
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = re.search(r"(\d+) checks: (\d+) passed, 0 failed", proc.stdout)
    assert counts is not None and int(counts.group(1)) > 0, proc.stdout
    assert "lenet5" in proc.stdout and "FAIL" not in proc.stdout
    # The README's count of the whole matrix's rows is the matrix's.
    (quoted,) = set(re.findall(r"(\d+) rows", README.read_text()))
    listed = subprocess.run(
        [sys.executable, "-m", "parity", "--list"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == int(quoted)


@pytest.mark.slow
def test_library_page_examples_run():
    page = "docs/library.md"
    blocks = _python_blocks(_section(page, "Using the library"))
    assert len(blocks) == 2
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page} (example {i + 1})", "exec"), namespace)
    losses = namespace["losses"]  # DynamicNet's 500 steps
    assert losses.shape == (500,) and float(losses[-1]) < 0.1 * float(losses[0])
