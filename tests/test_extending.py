"""docs/extending.md: every Python block runs, in order, in one namespace (a method and a family written against the
public API only)."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {"__name__": "extending_example"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["report"].units_executed.shape == (8, 1)
