"""The layout shows the layers, and imports go only downward: checked on the source (every import statement,
function-level ones too) and in a fresh interpreter."""

import ast
import subprocess
import sys

from conftest import ROOT

PKG = ROOT / "shivam"
# lowest first; a module may import its own layer's modules and any lower layer's
LAYERS = [
    ("base", ("shivam.errors", "shivam.bundled", "shivam.userfiles", "shivam._version")),
    ("specs", ("shivam.specs",)),
    ("sim", ("shivam.sim",)),
    ("calibrate", ("shivam.calibrate",)),
    ("validate", ("shivam.validate",)),
    ("report", ("shivam.report",)),
    ("api", ("shivam.api", "shivam")),
    ("cli", ("shivam.cli", "shivam.__main__")),
]
# layers that sit side by side: neither may import the other
SIBLINGS = {("validate", "report"), ("report", "validate")}


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, module
    return best[0]


def imports_of(module: str) -> set[str]:
    """The shivam modules (and top-level third-party packages) a module imports anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
            out |= submodules
            if len(submodules) < len(node.names):  # names defined in the package itself, not only its submodules
                out.add(node.module)
    return out


GRAPH = {m: {i for i in imports_of(m) if i in MODULES and i != m} for m in MODULES}


def test_every_import_goes_downward():
    bad = []
    for m, deps in GRAPH.items():
        for d in deps:
            lm, ld = layer_of(m), layer_of(d)
            if ld > lm or (LAYERS[lm][0], LAYERS[ld][0]) in SIBLINGS:
                bad.append(f"{m} ({LAYERS[lm][0]}) imports {d} ({LAYERS[ld][0]})")
    assert not bad, "\n".join(sorted(bad))


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in GRAPH[m]:
            if d.startswith(m + ".") or m == "shivam":  # a package importing its own modules to re-export them
                continue
            assert state.get(d) != 1, " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_calibrate_imports_neither_torch_nor_the_validator():
    for m in (m for m in MODULES if m.startswith("shivam.calibrate")):
        assert not any(i.split(".")[0] == "torch" or i.startswith("shivam.validate") for i in imports_of(m)), m
    code = "import sys, shivam.calibrate; assert not [m for m in sys.modules if m == 'torch' or 'validate' in m]"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_cli_modules_compute_no_costs():
    # the CLI turns strings into values and renders figures: it reaches the simulator only through the API
    for m in (m for m in MODULES if m.startswith("shivam.cli")):
        deps = imports_of(m)
        assert not [d for d in deps if d.startswith("shivam.sim") or d == "numpy"], (m, deps)


def test_workload_holds_no_engine_constant():
    # engine kernel facts are data (hardware/engines/*.json): the workload reads them from the engine profile
    source = (PKG / "sim" / "workload.py").read_text()
    for fact in ("ATTENTION_LAUNCHES", "MASK_LAUNCHES", "Q_TILE", "MASKED_ATTENTION_HEAD_DIM", "hf-dispatches"):
        assert fact not in source
