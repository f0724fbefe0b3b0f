"""The README's Python code runs as written, anywhere (its data: the sample shipped in the package)."""

from __future__ import annotations

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_code():
    assert python_blocks(), "README.md has no ```python block"


def test_the_readme_python_code_runs():
    for block in python_blocks():  # runs anywhere: the examples read the shipped sample
        assert "../shared/data" not in block, "README's Python examples must not need the shared data"
        code = block
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (the project's own README)
        if "x_clean" in namespace:  # the library example: results of the documented shapes
            x = namespace["x"]
            assert namespace["R"].shape == x.shape
            assert namespace["mask"].shape == x.shape[:3]
            assert namespace["scores"].shape == (x.shape[0], 5)
            assert np.all(np.asarray(namespace["r"].linf) <= 8 / 255 + 1e-6)
