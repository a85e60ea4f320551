"""The package boundary: jaxnets never imports torch; parity is where torch lives."""

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import jaxnets
names = [m.name for m in pkgutil.walk_packages(jaxnets.__path__, "jaxnets.") if m.name != "jaxnets.__main__"]
for name in names:
    importlib.import_module(name)
assert len(names) > 20, names
print(len(names), "torch" in sys.modules)
"""


def test_importing_every_jaxnets_module_leaves_torch_out():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, torch_loaded = proc.stdout.split()
    assert torch_loaded == "False", f"importing the {count} jaxnets modules imported torch"


def test_parity_is_where_torch_is_imported():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, parity.convert; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "True"  # the check above is not vacuous: this import does load torch


def test_public_names_stay_functions_after_their_submodule_is_imported():
    # jaxnets loads its names lazily; importing the submodule jaxnets.summary must not replace the function
    # jaxnets.summary, in either order (it did, so the result depended on which test ran first).
    code = (
        "import sys, types, jaxnets, jaxnets.summary; a = jaxnets.summary; from jaxnets import _lenet; "
        "print(isinstance(a, types.FunctionType), jaxnets.summary is a, "
        "isinstance(sys.modules['jaxnets.summary'], types.ModuleType))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True", "True"]
