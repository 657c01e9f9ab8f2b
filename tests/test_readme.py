"""The README's example runs as written."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["prediction"].shape == (1, 1)
    assert namespace["state"][0].shape == (1, 24)
    assert np.isfinite(namespace["loss"]) and namespace["grad_norm"] > 0
