"""The layout is the architecture: the pure core imports neither Prefect nor MLflow, imports point one way
(no cycles, module-level or hidden inside functions), and no code outside the registries branches on a
model-kind string."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nncore", "kernels", "flows")


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (functions included), resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # the longest known prefix: `flows.core.config.X` -> flows.core.config
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = {k: v for p in PACKAGES for k, v in modules(p).items()}
    known = set(mods)
    # importing a.b.c runs a/__init__ and a/b/__init__: an edge to each parent package is implied, not drawn
    return {name: {t for t in imports_of(name, path, known) if not name.startswith(t + ".")}
            for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycle_in_nncore_kernels_or_flows():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_check_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    g = graph()
    g["nncore.losses"].add("nncore.regularization")  # the cycle the losses/models split removed
    assert find_cycle(g) is not None


def test_imports_point_down_the_layers():
    """core -> nncore; runtime -> core; the flows -> runtime, core. Never upwards."""
    rank = {"nncore": 0, "kernels": 0, "flows.core": 1, "flows.runtime": 2}

    def layer(mod: str) -> int:
        for prefix, r in sorted(rank.items(), key=lambda kv: -len(kv[0])):
            if mod == prefix or mod.startswith(prefix + "."):
                return r
        return 3  # flows.nightly, flows.sweep, flows.tasks, flows.cli

    upward = [(a, b) for a, targets in graph().items() for b in targets
              if layer(b) > layer(a) and b != "flows"]
    assert not upward, upward


def test_the_pure_core_imports_neither_prefect_nor_mlflow():
    core = sorted(m for m in modules("flows") if m.startswith("flows.core."))
    assert len(core) >= 10
    code = ("import sys\n" + "".join(f"import {m}\n" for m in core) +
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'mlflow', 'prefect_dask'))\n"
            "print(bad)\nassert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


KIND_BRANCH = re.compile(r"""(==|!=)\s*["'](mlp|lstm|gru|rnn)["']|["'](mlp|lstm|gru|rnn)["']\s*(==|!=)""")


def test_no_model_kind_string_branches_outside_the_registries():
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for path in sorted((ROOT / "flows").rglob("*.py"))
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if KIND_BRANCH.search(line)]
    assert not hits, "\n".join(hits)
    assert KIND_BRANCH.search('if cfg.model == "mlp":') and KIND_BRANCH.search("'lstm' != kind")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_graph(package):
    """The graph sees every file (a check of the checker)."""
    assert set(modules(package)) <= set(graph())
