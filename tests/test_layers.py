"""The shape of the code (docs/design.md): imports point down, the store owns the data, the CLI is fast.

    {gallery.cli, gallery.server} → gallery.app → {search, indexer, gallery.ingest}
                → {gallery.faces, gallery.store}
                → {gallery.errors, gallery.device, gallery.settings, gallery.fsutil, gallery.progress}

Every import is checked, also those inside functions and under TYPE_CHECKING: a lazy import that points
up is still an upward dependency. The same rules are import-linter contracts in pyproject.toml
([tool.importlinter]), run here on every test run (`lint-imports` runs them by hand).
"""

from __future__ import annotations

import ast
import copy
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gallery", "indexer", "search", "benchmarks")
BOTTOM = {"gallery.errors", "gallery.device", "gallery.settings", "gallery.fsutil", "gallery.progress", "gallery"}
# room -> rooms it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "gallery.errors": {"gallery"},
    "gallery.fsutil": {"gallery"},
    "gallery.progress": {"gallery"},
    "gallery.device": {"gallery", "gallery.errors"},
    "gallery.settings": {"gallery", "gallery.errors"},
    "gallery": set(),
    "gallery.store": BOTTOM,
    "gallery.faces": BOTTOM,
    "gallery.ingest": BOTTOM | {"gallery.faces", "gallery.store"},
    "indexer": BOTTOM | {"gallery.store"},
    "search": BOTTOM | {"gallery.faces", "gallery.store", "indexer", "gallery.ingest"},
    # the application layer: one function per use case, under both the CLI and the server
    "gallery.app": BOTTOM | {"gallery.faces", "gallery.store", "gallery.ingest", "indexer", "search"},
    "gallery.server": BOTTOM | {"gallery.faces", "gallery.store", "gallery.ingest", "indexer", "search",
                                "gallery.app"},
    "gallery.cli": BOTTOM | {"gallery.faces", "gallery.store", "gallery.ingest", "indexer", "search",
                             "gallery.app", "gallery.server"},
    "benchmarks": BOTTOM | {"gallery.faces", "gallery.store", "gallery.ingest", "indexer", "search", "gallery.app"},
}
ROOMS = sorted(ALLOWED, key=len, reverse=True)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str | None:
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            return room
    return None


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(module: str, path: Path) -> set[str]:
    """Absolute names of the project modules this module imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_imports_point_down() -> None:
    modules = project_modules()
    assert "gallery.cli" in modules and "gallery.store.gallery" in modules
    upward = []
    for module, path in modules.items():
        room = room_of(module)
        assert room is not None, f"{module} is in no room of the layout"
        for target in imports_of(module, path):
            target_room = room_of(target)
            if target_room is None or target_room == room:
                continue
            if target_room not in ALLOWED[room]:
                upward.append(f"{module} imports {target} ({room} -> {target_room})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    """No cycle of module imports, counting those inside functions and under TYPE_CHECKING."""
    modules = project_modules()
    graph = {m: {t for t in imports_of(m, p) if t in modules and t != m} for m, p in modules.items()}
    # a package __init__ importing its own submodules is not a cycle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".") and not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_the_store_knows_sqlite_and_file_names() -> None:
    offenders = []
    for module, path in project_modules().items():
        if room_of(module) == "gallery.store":
            continue
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if "sqlite3" in names:
                    offenders.append(f"{module}: imports sqlite3")
            if isinstance(node, ast.Constant) and node.value == "gallery.db":
                offenders.append(f"{module}:{node.lineno}: the literal 'gallery.db'")
            # a path built from the shards folder's name (a "shards" dict key or table label is fine)
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                    and isinstance(node.right, ast.Constant) and node.right.value == "shards"):
                offenders.append(f"{module}:{node.lineno}: a path to the 'shards' folder")
    assert not offenders, "\n".join(offenders)


# Libraries only one model loader needs: imported by that loader alone (the product runs without them).
ONLY_IN = {
    "onnxruntime": {"gallery.faces.models.onnx_model"},
    "onnx": {"gallery.faces.models.onnx_model"},
    "h5py": {"gallery.faces.models.keras_h5"},
    "tensorflow": set(),  # test-only (the reference implementations): never imported by the product
    "keras": set(),
}


def test_model_libraries_are_imported_only_by_their_loaders() -> None:
    offenders = []
    for module, path in project_modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ONLY_IN and module not in ONLY_IN[top]:
                    offenders.append(f"{module}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("argv", [["--help"], ["info", "--gallery", "{missing}"], ["index", "--help"]])
def test_cli_imports_no_torch(argv: list[str], tmp_path: Path) -> None:
    argv = [a.replace("{missing}", str(tmp_path / "none")) for a in argv]
    code = (
        "import sys\n"
        "from gallery.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'faiss', 'facenet_pytorch', 'matplotlib', 'onnxruntime', 'h5py',\n"
        "                           'tensorflow') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


# --- the import contracts (pyproject.toml, [tool.importlinter]) -----------------------------------------

# The cycles the code had, one import each (importer, imported) that closed them: the contracts must
# refuse every one of them if it came back, also as a lazy import inside a function.
OLD_CYCLES = {
    "threshold runs a calibration": ("search.threshold", "search.calibrate"),
    "threshold builds a searcher": ("search.threshold", "search.searcher"),
    "the local runner starts the Ray engine": ("gallery.ingest.runner", "gallery.ingest.distributed"),
    "the bench report imports the sweep": ("search.bench.report", "search.bench.sweep"),
    "weights import the model spec": ("gallery.faces.models.weights", "gallery.faces.models.spec"),
    "video imports the photo decoder": ("gallery.faces.video", "gallery.faces.decode"),
    "templates import the gallery": ("gallery.store.templates", "gallery.store.gallery"),
}


def _env_with_repo_first() -> dict[str, str]:
    """The repository's packages, not an installed copy, are the ones analysed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def test_import_contracts_hold() -> None:
    """`lint-imports` (import-linter, a dev dependency) keeps every contract of pyproject.toml."""
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), f"{lint} is missing: install the dev extra (pip install -e '.[dev]'), it has import-linter"
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, env=_env_with_repo_first(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and " 0 broken" in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def contracts_and_graph():
    """The contracts of pyproject.toml and the import graph they are checked on (built as lint-imports
    builds it: function-level and TYPE_CHECKING imports included)."""
    grimp = pytest.importorskip("grimp")  # installed with import-linter; test_import_contracts_hold needs both
    from importlinter import configuration
    from importlinter.application.use_cases import read_user_options
    from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
    from importlinter.contracts.forbidden import ForbiddenContract
    from importlinter.contracts.independence import IndependenceContract
    from importlinter.contracts.layers import LayersContract

    configuration.configure()
    types = {"layers": LayersContract, "acyclic_siblings": AcyclicSiblingsContract,
             "forbidden": ForbiddenContract, "independence": IndependenceContract}
    options = read_user_options(str(REPO / "pyproject.toml"))
    session = options.session_options
    assert session.get("exclude_type_checking_imports", "false") in (False, "false", "False")
    contracts = {
        c["id"]: types[c["type"]](name=c["name"], session_options=session,
                                  contract_options={k: v for k, v in c.items() if k not in ("id", "name", "type")})
        for c in options.contracts_options
    }
    roots = session["root_packages"]
    for root in roots:  # the graph is of this checkout's packages, not of an installed copy
        assert Path(importlib.import_module(root).__file__).resolve().is_relative_to(REPO), root
    graph = grimp.build_graph(*roots, include_external_packages=False, exclude_type_checking_imports=False,
                              cache_dir=None)
    return contracts, graph


def broken(contracts: dict, graph) -> set[str]:
    return {cid for cid, contract in contracts.items() if not contract.check(graph, verbose=False).kept}


def test_the_contracts_name_every_part_of_gallery(contracts_and_graph) -> None:
    """A new room of gallery/ must be given its place in the layers (or it would be unchecked)."""
    contracts, graph = contracts_and_graph
    named = {tail.strip("() ") for layer in contracts["layers"].contract_options["layers"] for tail in
             layer.replace(":", "|").split("|")}
    unplaced = sorted(c for c in graph.find_children("gallery") if c not in named)
    assert not unplaced, f"not in the layers contract of pyproject.toml: {unplaced}"
    assert {"gallery.cli", "search", "indexer", "gallery.store", "gallery.errors"} <= named


@pytest.mark.parametrize("cycle", sorted(OLD_CYCLES))
def test_the_contracts_refuse_each_old_cycle(contracts_and_graph, cycle: str) -> None:
    """Put back the one import that closed an old cycle, as a lazy import inside a function: the checker
    must report the contract it breaks (the same contracts on the code as it is are all kept)."""
    contracts, graph = contracts_and_graph
    assert broken(contracts, graph) == set()
    importer, imported = OLD_CYCLES[cycle]
    assert not graph.direct_import_exists(importer=importer, imported=imported)
    assert graph.chain_exists(importer=imported, imported=importer), "the other half of the cycle is gone"
    again = copy.deepcopy(graph)
    again.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"    import {imported}")
    expected = {"acyclic"} | ({"search-path"} if importer == "search.threshold" else set()) \
        | ({"ingest-engines"} if importer == "gallery.ingest.runner" else set())
    assert expected <= broken(contracts, again)


@pytest.mark.parametrize(("importer", "imported", "contract"), [
    ("indexer.build", "search.searcher", "layers"),  # DESIGN.md: indexer never imports search
    ("gallery.store.gallery", "gallery.faces.detect", "layers"),  # the store never imports the faces
    ("gallery.faces.pipeline", "gallery.cli.common", "layers"),  # nothing imports the CLI
])
def test_the_contracts_refuse_an_upward_import(contracts_and_graph, importer: str, imported: str,
                                               contract: str) -> None:
    contracts, graph = contracts_and_graph
    again = copy.deepcopy(graph)
    again.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert contract in broken(contracts, again)
