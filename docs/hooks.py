"""MkDocs hooks.

* The package's version in the site's name, so the site and the package
  cannot disagree.
* The changelog served from the repository's root.
* The figures of the committed notebooks as `figures/<notebook>_<k>.png`
  (the k-th figure, from 0), so the paper pages show the figures the
  notebooks made (`docs/notebooks` is a link to the notebooks).
"""

import base64
import json
import pathlib

import keras_gradnets

ROOT = pathlib.Path(__file__).resolve().parent.parent


def on_config(config):
    config.site_name = f"keras_gradnets {keras_gradnets.__version__}"
    return config


def notebook_figures(path):
    """The PNG figures in a notebook's outputs, in order, as bytes."""
    notebook = json.loads(pathlib.Path(path).read_text())
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def on_files(files, config):
    # Imported here so that `on_config` (checked by the tests, which do not
    # install MkDocs) loads without it.
    from mkdocs.structure.files import File

    changelog = str(ROOT / "CHANGELOG.md")
    files.append(File.generated(config, "changelog.md", abs_src_path=changelog))
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, png in enumerate(notebook_figures(notebook)):
            uri = f"figures/{notebook.stem}_{k}.png"
            files.append(File.generated(config, uri, content=png))
    return files
