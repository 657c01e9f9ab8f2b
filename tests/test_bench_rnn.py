"""benchmarks/bench_rnn.py --against: the other tree's kernels are the ones timed, alternately with ours,
and a tree without built kernels is a clear error, not a silent comparison of a build with itself."""
from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys

import pytest

import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_rnn.py")

IN_PLACE = any(os.path.exists(os.path.join(ROOT, "kernels", "_recurrent" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)
pytestmark = pytest.mark.skipif(not (kernels.available() and IN_PLACE),
                                reason="needs the kernels compiled in place (pip install -e .)")


def _bench(*args):
    return subprocess.run([sys.executable, BENCH, "--kinds", "rnn", "--cases", "small-batch", "--backends", "fused",
                           "--quick", "--repeats", "1", *args], capture_output=True, text=True, timeout=300)


def _tree(tmp_path, built: bool, ignore=("*.so", "*.pyd")):
    tree = tmp_path / "other"
    shutil.copytree(os.path.join(ROOT, "kernels"), tree / "kernels",
                    ignore=None if built else shutil.ignore_patterns(*ignore))
    return tree


def test_against_times_the_other_trees_kernels_alternately(tmp_path):
    tree = _tree(tmp_path, built=True)
    res = _bench("--against", str(tree), "--rounds", "2")
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("this tree (")[1]
    assert f"against {tree}: 2 rounds alternating" in table
    row = next(line for line in table.splitlines() if line.startswith("rnn   small-batch"))
    cells = row.split()
    assert cells[4] == "fused" and float(cells[5]) > 0 and float(cells[6]) > 0
    assert len(cells[8:]) == 2  # one ratio per round


def test_against_a_tree_without_built_kernels_is_a_clear_error(tmp_path):
    tree = _tree(tmp_path, built=False)
    res = _bench("--against", str(tree))
    assert res.returncode != 0
    assert f"--against {tree}: its kernels are not built" in res.stderr


@pytest.mark.skipif(not kernels.available() or kernels.build_info()["wide_tile_rows"] is None,
                    reason="this build has no wide tiles (64-byte vectors only)")
def test_against_a_tree_without_its_wide_tiles_is_refused(tmp_path):
    """Ours would be handed to it: the other tree's narrow tiles timed with our wide ones."""
    tree = _tree(tmp_path, built=False, ignore=("_recurrent_wide*.so", "_recurrent_wide*.pyd"))
    assert list((tree / "kernels").glob("_recurrent.*.so")), "the narrow extension is copied"
    res = _bench("--against", str(tree))
    assert res.returncode != 0
    assert f"--against {tree}: its kernels are not built" in res.stderr and "_recurrent_wide" in res.stderr


@pytest.mark.parametrize("where, message", [("missing", "no kernels/ package there"), ("root", "that is this tree")])
def test_against_a_wrong_directory_is_refused(tmp_path, where, message):
    res = _bench("--against", str(tmp_path / "nothing") if where == "missing" else ROOT)
    assert res.returncode != 0 and message in res.stderr


WIDE = kernels.available() and kernels.build_info()["wide_tile_rows"] is not None


@pytest.mark.skipif(not WIDE, reason="this build has no wide tiles (64-byte vectors only)")
def test_tiles_times_the_narrow_and_the_wide_tiles_alternately():
    res = _bench("--backends", "fused,predict", "--tiles", "--rounds", "2")
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("wide tiles against narrow ones (NNCORE_TILES): 2 rounds alternating")[1]
    rows = {line.split()[4]: line.split() for line in table.splitlines() if line.startswith("rnn   small-batch")}
    assert rows.keys() == {"fused", "predict"}
    for cells in rows.values():
        assert float(cells[5]) > 0 and float(cells[6]) > 0
        # the ratio of the medians (narrow / wide), from the times printed to 1 µs (~40 µs and more here)
        assert float(cells[7]) == pytest.approx(float(cells[6]) / float(cells[5]), rel=0.03)
        assert len(cells[8:]) == 2  # one ratio per round


@pytest.mark.parametrize("args, message", [
    (("--tiles", "--against", "/tmp"), "--against and --tiles are two comparisons: give one"),
    (("--tiles", "--backends", "numpy"), "--against and --tiles compare the kernel backends"),
    (("--tiles", "--rounds", "0"), "--rounds must be >= 1, got 0"),
])
def test_a_comparison_asked_for_wrongly_is_refused(args, message):
    res = _bench(*args)   # a later --backends replaces _bench's
    assert res.returncode != 0 and message in res.stderr, res.stderr
