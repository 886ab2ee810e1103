"""The layers, bottom to top: emoverse (data logic) -> models -> tasks -> flows -> apps. A layer
imports only the ones below it, and no Prefect below tasks; a flow module loads no torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("emoverse", "models", "tasks", "flows", "apps")


def _imports(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    if layer in ("emoverse", "models"):
        above.add("prefect")  # the library is plain Python; tasks/ wrap it
    wrong = {
        str(path.relative_to(REPO)): sorted(_imports(path) & above)
        for path in sorted((REPO / layer).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_importing_the_flows_loads_no_torch():
    """`prefect deploy` and the cpu pool's workers import the flow modules: they should not pay
    for torch (seconds) before a task that trains needs it."""
    heavy = ("torch", "transformers", "datasets", "mlflow")
    code = (
        "import sys, flows.pipeline, flows.corpus, flows.training; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
