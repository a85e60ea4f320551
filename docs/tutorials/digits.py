# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A training run on digits, executed
#
# `jaxnets train` with its defaults (LeNet, Adam, lr 1e-3, batch 32, 40 epochs on scikit-learn's
# digits), then `jaxnets evaluate` on the held-out images. This page is a jupytext script
# (`docs/tutorials/digits.py`) executed at every build of the documentation: the output, the numbers
# and the two images are that run's. The [Training on digits](../training.md) page describes the
# command and its options.

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from IPython.display import Image, display

jaxnets_cli = Path(sys.executable).with_name("jaxnets")  # the command of this environment
run = Path(tempfile.mkdtemp()) / "digits"


def jaxnets(*args):
    done = subprocess.run([jaxnets_cli, *map(str, args)], capture_output=True, text=True, check=True)
    print(done.stdout.replace(str(run), "runs/digits"))  # the temporary directory's name says nothing


# %%
jaxnets("train", "--out", run, "--no-progress")

# %% [markdown]
# The curves the run draws (`curves.png` in the run directory):

# %%
display(Image(filename=run / "curves.png"))

# %% [markdown]
# `metrics.json` holds the run's configuration and every epoch's numbers:

# %%
metrics = json.loads((run / "metrics.json").read_text())
print("metrics.json records:", ", ".join(sorted(metrics)))

# %% [markdown]
# ## Evaluate the trained net
#
# `jaxnets evaluate` reads the run's last checkpoint and draws the confusion matrix of the test images.

# %%
jaxnets("evaluate", run, "--confusion", run / "confusion.png")
display(Image(filename=run / "confusion.png"))
