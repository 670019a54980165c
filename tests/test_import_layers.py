"""Imports inside mobilekit/ only go downward: no module reaches itself through its imports
(function-level imports included, as they are still a dependency), and io.py, the lowest
layer, imports nothing of mobilekit."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mobilekit"


def _modules():
    """{dotted name: path} of every module of the package (a package's name for __init__)."""
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported_names(tree, package):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def import_graph():
    """{module: set of mobilekit modules it imports}; `from pkg import mod` counts as mod,
    and a module's own enclosing packages are not edges (Python runs them first anyway)."""
    mods = _modules()

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text()), package):
            if imported == "mobilekit" or imported.startswith("mobilekit."):
                target = resolve(imported)
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_function_level_and_from_imports():
    graph = import_graph()
    assert "mobilekit.zoo.registry" in graph["mobilekit.loading"]  # inside a function
    assert "mobilekit.train.rundir" in graph["mobilekit.detection.train"]  # from pkg import mod


def test_no_import_cycle_inside_mobilekit():
    found = cycles(import_graph())
    assert not found, "import cycles (imports must only go downward):\n" + "\n".join(
        " <-> ".join(component) for component in found)


def test_io_is_the_lowest_layer():
    assert import_graph()["mobilekit.io"] == set()
