"""The package's modules import each other without a circle.

Every ``import hrv_diffusion...`` and ``from hrv_diffusion... import ...`` (and relative import) of every module,
at module level or inside a function, is one edge of a graph over the modules of ``hrv_diffusion``; the graph must be
acyclic. A circle hidden by a lazy import inside a function counts: it only moves the failure to run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "hrv_diffusion"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package is named by its ``__init__.py``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The package modules that module ``name`` (at ``path``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from a.b import c`` imports the module a.b.c when there is one, else the name c of a.b
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                while target not in modules and "." in target:  # ``import a.b.name`` of a non-module: its module
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imported_modules(name, path, modules, package) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one circle path when found."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [circle_in(graph, set(component)) for component in components]


def circle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One circle through the first module of a strongly connected component: a -> b -> ... -> a."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:  # breadth first, so the circle shown is a shortest one
        path = paths.pop(0)
        for other in sorted(graph[path[-1]] & component):
            if other == start:
                return path + [start]
            if other not in seen:
                seen.add(other)
                paths.append(path + [other])
    raise AssertionError(f"no circle through {start} in {sorted(component)}")


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_graph_reads_every_import_form(tmp_path):
    package = write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\nfrom pkg.sub import c\n",
        "b.py": "def f():\n    from .sub.c import NAME\n    return NAME\n",
        "sub/__init__.py": "from . import d\n",
        "sub/c.py": "import os\nfrom pkg.sub.d import thing\nNAME = 1\n",
        "sub/d.py": "import pkg.a as a_module\n",
    })
    assert import_graph(package, "pkg") == {
        "pkg": set(), "pkg.a": {"pkg.b", "pkg.sub.c"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": {"pkg.sub.d"},
        "pkg.sub.c": {"pkg.sub.d"}, "pkg.sub.d": {"pkg.a"},
    }
    assert cycles(import_graph(package, "pkg")) == [["pkg.a", "pkg.sub.c", "pkg.sub.d", "pkg.a"]]


def test_a_lazy_import_circle_is_found_and_an_acyclic_graph_passes(tmp_path):
    package = write_package(tmp_path, {
        "__init__.py": "",
        "load.py": "from pkg.paper import PATH\ndef load():\n    from pkg.fetch import check\n    check()\n",
        "fetch.py": "from pkg.paper import PATH\nfrom pkg.load import load\ndef check():\n    pass\n",
        "paper.py": "PATH = 'x'\n",
    })
    assert cycles(import_graph(package, "pkg")) == [["pkg.fetch", "pkg.load", "pkg.fetch"]]
    (package / "load.py").write_text("from pkg.paper import PATH\n", encoding="utf-8")
    assert cycles(import_graph(package, "pkg")) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert len(graph) > 50 and all(target in graph for targets in graph.values() for target in targets)
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_hrv_loading_and_downloading_share_paper_and_not_each_other():
    graph = import_graph()
    assert f"{PACKAGE}.hrv.paper" in graph[f"{PACKAGE}.hrv.vectors"]
    assert f"{PACKAGE}.hrv.paper" in graph[f"{PACKAGE}.hrv.published"]
    assert f"{PACKAGE}.hrv.published" not in graph[f"{PACKAGE}.hrv.vectors"]
    assert f"{PACKAGE}.hrv.vectors" not in graph[f"{PACKAGE}.hrv.published"]
