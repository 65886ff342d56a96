"""The shape of the code (DESIGN.md): imports point down, the store owns the data, the CLI is fast.

    {gallery.cli, gallery.server} → gallery.app → {search, indexer, gallery.ingest}
                → {gallery.faces, gallery.store} → {gallery.errors, gallery.device, gallery.fsutil, gallery.progress}

Every import is checked, also those inside functions: a lazy import that points up is still an
upward dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gallery", "indexer", "search", "benchmarks")
BOTTOM = {"gallery.errors", "gallery.device", "gallery.fsutil", "gallery.progress", "gallery"}
# room -> rooms it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "gallery.errors": {"gallery"},
    "gallery.fsutil": {"gallery"},
    "gallery.progress": {"gallery"},
    "gallery.device": {"gallery", "gallery.errors"},
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


def imports_of(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the project modules this module imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
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
    modules = project_modules()
    graph = {
        m: {t for t in imports_of(m, p, top_level_only=True) if t in modules and t != m} for m, p in modules.items()
    }
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
