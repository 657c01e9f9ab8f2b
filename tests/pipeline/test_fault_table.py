"""The README's fault table is generated from the fault-injection tests' ``fault`` markers.

Every test marked ``@pytest.mark.fault(fault=..., did=..., kept=...)`` (or a parameter carrying
that mark) is one row: the fault injected, what the system did, what was kept. This test fails
when the README's table differs from the markers; ``python tests/pipeline/test_fault_table.py``
rewrites it (the test itself never writes). The rows come from collecting the pipeline tests
in a subprocess (``conftest.py`` writes the table when ``NNFORECAST_FAULT_TABLE`` names a file);
whether each row's test passes is the rest of the suite's job (CI runs every one of them).
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- fault table: generated from the tests' fault markers -->", "<!-- end of fault table -->"


def fault_table(items) -> str:
    rows, seen = [], set()
    for item in items:
        mark = item.get_closest_marker("fault")
        if mark is None:
            continue
        row = (mark.kwargs["fault"], mark.kwargs["did"], mark.kwargs["kept"])
        if row in seen:
            continue
        seen.add(row)
        test = f"`{Path(item.fspath).name}::{item.originalname}`"
        rows.append(f"| {row[0]} | {row[1]} | {row[2]} | {test} |")
    return "\n".join(["| fault injected | what the system did | what was kept | test |", "|---|---|---|---|", *rows])


def collected_table(workdir: Path) -> str:
    """The table of every fault marker, from collecting (not running) the pipeline tests in a subprocess:
    it never depends on -k or -m."""
    out = workdir / "faults.md"
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests" / "pipeline")], cwd=ROOT, capture_output=True, text=True,
                               timeout=600, env={**os.environ, "NNFORECAST_FAULT_TABLE": str(out)})
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    return out.read_text()


def readme_parts() -> tuple[str, str, str]:
    """README.md as (text before the table, the table, text after it)."""
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, f"README.md lacks the fault table markers {BEGIN!r} … {END!r}"
    head, rest = readme.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    return head, current, tail


def test_readme_fault_table_is_generated_from_the_tests(tmp_path):
    table = collected_table(tmp_path)
    assert table.count("\n") >= 2 + 15  # at least 15 faults
    assert readme_parts()[1].strip() == table, "README's fault table is out of date; run `python " \
        "tests/pipeline/test_fault_table.py` to regenerate it. Expected:\n" + table


if __name__ == "__main__":  # rewrite the README's table from the markers
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = collected_table(Path(tmp))
    head, _, tail = readme_parts()
    (ROOT / "README.md").write_text(f"{head}{BEGIN}\n{new}\n{END}{tail}")
    print(f"README.md: fault table of {new.count(chr(10)) - 1} rows")
