"""facerec's import graph: no cycle, and no import against the layer order the README's Layout section gives."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS_HEADING = "Layers, bottom to top"


def module_name(path: Path, root: Path) -> str:
    """``facerec/data/align.py`` → ``facerec.data.align``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file at ``path`` (module ``name``) imports, at any depth of its code.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``; relative imports
    are resolved against ``name``.
    """
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph(root: Path, package: str = "facerec") -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of ``root/package``."""
    paths = {module_name(path, root): path for path in sorted((root / package).rglob("*.py"))}
    return {name: imported_modules(path, name, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between ``facerec``'s subpackages (``facerec.data.x`` counts as ``facerec.data``)."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module != "facerec":  # the package's __init__ re-exports the public API from every layer
            packages.setdefault(package(module), set()).update(
                package(t) for t in targets if package(t) != package(module)
            )
    return packages


def layer_of(module: str, layers: list[list[str]]) -> int:
    """The rank of the longest layer entry that is ``module`` or a package above it (the root: only itself)."""
    matches = [
        (len(entry), rank)
        for rank, entries in enumerate(layers)
        for entry in entries
        if module == entry or ("." in entry and module.startswith(entry + "."))
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to the README's '{LAYERS_HEADING}' list")
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every import of a module from a higher layer than its own (imports inside a top entry are free)."""
    return [
        f"{module} (layer {layer_of(module, layers) + 1}) imports {target} (layer {layer_of(target, layers) + 1})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target, layers) > layer_of(module, layers)
    ]


def readme_layers(readme: Path) -> list[list[str]]:
    """The README's numbered list under ``Layers, bottom to top``: each item's backticked module names."""
    text = readme.read_text()
    start = text.index(LAYERS_HEADING)
    layers = []
    for line in text[start:].splitlines()[1:]:
        item = re.match(r"\s*\d+\.\s+(.*)", line)
        if item is None:
            if layers:
                break
            continue
        layers.append(re.findall(r"`(facerec[\w.]*)`", item.group(1)))
    return layers


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO)


@pytest.fixture(scope="module")
def layers() -> list[list[str]]:
    return readme_layers(REPO / "README.md")


def test_readme_declares_layers(layers):
    assert len(layers) >= 5 and all(layers), layers


def test_no_import_cycle(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle(package_graph(graph)) is None, " -> ".join(find_cycle(package_graph(graph)))


def test_imports_follow_the_layers(graph, layers):
    assert upward_imports(graph, layers) == []


def test_package_root_holds_a_few_modules():
    modules = sorted(path.name for path in (REPO / "facerec").glob("*.py"))
    assert len(modules) <= 6, modules


def write_package(root: Path, sources: dict[str, str]) -> Path:
    for name, source in sources.items():
        path = root / Path(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_the_checks_find_the_former_cycles(tmp_path, layers):
    """facerec's two cycles before the layers: module <-> inference, and data <-> eval."""
    root = write_package(
        tmp_path,
        {
            "facerec.__init__": "",
            "facerec.module.__init__": "from facerec.module.face_module import FaceRecognitionModule\n",
            "facerec.module.face_module": "from facerec.inference import embed_with_mirror\n",
            "facerec.inference": "def load_model():\n    from facerec.module import FaceRecognitionModule\n",
            "facerec.data.__init__": "",
            "facerec.data.protocols.__init__": "",
            "facerec.data.protocols.ijb": "from facerec.eval.ijb import read_template_pairs\n",
            "facerec.eval.__init__": "",
            "facerec.eval.ijb": "from .verification import l2_normalize\n",
            "facerec.eval.verification": "",
            "facerec.data.verification.sets": "",
            "facerec.eval.baseline": "from facerec.data.verification.sets import VerificationImages\n",
        },
    )
    graph = import_graph(root)
    assert graph["facerec.eval.ijb"] == {"facerec.eval.verification"}  # a relative import, resolved
    assert set(find_cycle(graph)) == {"facerec.inference", "facerec.module", "facerec.module.face_module"}
    assert set(find_cycle(package_graph(graph))) == {"facerec.data", "facerec.eval"}
    graph = import_graph(root)
    assert upward_imports(graph, layers) == [
        "facerec.data.protocols.ijb (layer 2) imports facerec.eval.ijb (layer 4)",
        f"facerec.module.face_module (layer {layer_of('facerec.module', layers) + 1}) imports facerec.inference "
        f"(layer {layer_of('facerec.inference', layers) + 1})",
    ]
