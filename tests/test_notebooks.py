"""The notebooks run end to end, offline.

With `KERAS_GRADNETS_QUICK=1` every notebook runs each of its cells at a
few epochs and small sizes. They run on one backend: a notebook calls only
the public API, whose behaviour the rest of the suite checks on all three
backends, so a second and third run would check the same thing at three
times the cost. Torch runs them fastest on CPU: 77 s for all six, against
177 s on JAX (measured on 2 cores).
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import BACKEND

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")
NOTEBOOK_BACKEND = "torch"


@pytest.mark.skipif(
    BACKEND != NOTEBOOK_BACKEND,
    reason=f"the notebooks run on the {NOTEBOOK_BACKEND} backend only",
)
@pytest.mark.parametrize(
    "name", sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
)
def test_notebook_executes(name):
    path = os.path.join(NOTEBOOKS, name)
    notebook = nbformat.read(path, as_version=4)
    env_full = os.environ.pop("KERAS_GRADNETS_FULL", None)
    os.environ["KERAS_GRADNETS_QUICK"] = "1"
    try:
        NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": NOTEBOOKS}},
        ).execute()
    finally:
        del os.environ["KERAS_GRADNETS_QUICK"]
        if env_full is not None:
            os.environ["KERAS_GRADNETS_FULL"] = env_full
    outputs = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
