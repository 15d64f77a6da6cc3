"""The notebooks run end to end, offline.

With `KERAS_GRADNETS_QUICK=1`, notebooks that are slow at their default
size run every cell at a few epochs; the others ignore it.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


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
