"""The house rules that keep segtrain easy to extend, checked on its source with ``ast``:
no import circles (imports inside functions count), imports inside functions only for optional
heavy dependencies (each with a comment saying so), and no module outside the format table
that asks which dataset format it has."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "segtrain"
# Third-party modules that cost seconds or are optional extras: the only ones a function may import.
HEAVY = {"tensorflow", "jax", "torch", "keras", "nibabel", "albumentations", "onnx", "onnxruntime", "tf2onnx", "cv2", "matplotlib",
         "tensorboard", "mlflow", "wandb", "openvino", "pycocotools", "huggingface_hub", "fastapi", "uvicorn", "rasterio", "keras_hub"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import that runs (not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # type hints only: never executed
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - child.level + 1] + [child.module or ""]).strip(".") if child.level else child.module
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, inside, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, inside, child.lineno) for alias in child.names)
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    edges = {m: {t for t, _, _ in imports if t in MODULES and t != m} for m, imports in IMPORTS.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            connect(module)
    return found


def _heavy(module: str, seen: frozenset = frozenset()) -> bool:
    """A heavy third-party module, or a segtrain module that imports one when it is imported."""
    if module.split(".")[0] in HEAVY:
        return True
    if module not in MODULES or module in seen:
        return False
    return any(_heavy(t, seen | {module}) for t, inside, _ in IMPORTS[module] if not inside)


def test_no_import_circles_counting_imports_inside_functions():
    assert _cycles() == []


def test_imports_inside_functions_are_only_heavy_optional_dependencies_with_a_reason():
    light, silent = [], []
    for name, imports in IMPORTS.items():
        lines = MODULES[name].read_text().splitlines()
        for target, inside, line in imports:
            if not inside:
                continue
            where = f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} imports {target}"
            if not _heavy(target):
                light.append(where)
            elif not any("#" in text for text in lines[max(line - 2, 0): line]):
                silent.append(where)
    assert light == [], "import these at the top of the module"
    assert silent == [], "say in a comment on the import (or the line above) which heavy dependency it defers"


def test_no_module_outside_the_format_table_asks_which_format_it_has():
    """``data.format == "nifti"`` belongs in the format's module; everyone else asks the table."""
    asking = []
    for name, path in MODULES.items():
        if name.startswith("segtrain.data.formats"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                names_format = any(isinstance(s, ast.Attribute) and s.attr == "format" for s in sides)
                literal = any(isinstance(s, (ast.Constant, ast.Tuple, ast.List, ast.Set)) for s in sides)
                if names_format and literal:
                    asking.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert asking == []


def test_the_scan_sees_a_circle_and_a_light_lazy_import(tmp_path, monkeypatch):
    """The checks above can fail: a made-up pair of modules importing each other is a circle."""
    monkeypatch.setitem(MODULES, "segtrain.fake_a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "segtrain.fake_b", tmp_path / "b.py")
    (tmp_path / "a.py").write_text("from segtrain import fake_b\n")
    (tmp_path / "b.py").write_text("def f():\n    import segtrain.fake_a\n")
    monkeypatch.setitem(IMPORTS, "segtrain.fake_a", _imports("segtrain.fake_a", tmp_path / "a.py"))
    monkeypatch.setitem(IMPORTS, "segtrain.fake_b", _imports("segtrain.fake_b", tmp_path / "b.py"))
    assert ["segtrain.fake_a", "segtrain.fake_b"] in _cycles()
    assert not _heavy("segtrain.fake_a") and _heavy("keras.ops") and _heavy("segtrain.models")
