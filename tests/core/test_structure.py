"""The shape of the code, computed with ``ast``: module and function sizes, the import
graph (layers point one way, no circles), and the layout of the test folders. Nothing
here imports the modules it checks."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "teacherkit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: Layers that sit above training and must never reach into it.
ABOVE_TRAINING = ("teacherkit.evaluation", "teacherkit.inference")


def checked_files() -> list[Path]:
    """The core and the shipped plugins' packages (their tests and build folders aside)."""
    files = sorted(PACKAGE.rglob("*.py"))
    for plugin in sorted((ROOT / "plugins").glob("*/")):
        files += sorted(p for p in plugin.rglob("*.py")
                        if not {"tests", "build", ".eggs"} & set(p.relative_to(plugin).parts[:-1]))
    return files


def size_offenders(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path: module N lines`` and ``path:line name() N lines`` for each over the limits
    (a function counts from its ``def`` to its last line, decorators aside)."""
    found = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(root)
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel}: module {lines} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name}() {length} lines")
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module, *, module_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of a module; with ``module_level_only``, those that run when it is
    imported (not inside functions or classes' methods, nor under ``if TYPE_CHECKING``)."""
    if not module_level_only:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)


def imported_modules(name: str, path: Path, known: set[str], *, module_level_only: bool) -> set[str]:
    """The ``teacherkit`` modules ``name`` imports, each resolved to the deepest module named
    (``from teacherkit.data import coco`` → ``teacherkit.data.coco``)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in _import_nodes(tree, module_level_only=module_level_only):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("teacherkit") and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as the list of modules, first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


# -- the checks ----------------------------------------------------------------------------
def test_no_module_over_400_lines_and_no_function_over_60():
    offenders = size_offenders(checked_files())
    assert not offenders, f"{len(offenders)} over the limits:\n" + "\n".join(offenders)


def test_evaluation_and_inference_never_import_training():
    modules = core_modules()
    known = set(modules)
    bad = []
    for name, path in modules.items():
        if name.startswith(ABOVE_TRAINING):
            for target in imported_modules(name, path, known, module_level_only=False):
                if target == "teacherkit.training" or target.startswith("teacherkit.training."):
                    bad.append(f"{name} imports {target}")
    assert not bad, "evaluation/ and inference/ must not depend on training/:\n" + "\n".join(bad)


def test_no_import_cycle_among_core_modules():
    modules = core_modules()
    known = set(modules)
    graph = {name: imported_modules(name, path, known, module_level_only=True) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def collected_test_folders() -> list[Path]:
    """Every folder pytest collects from (``testpaths``: the core's tests, each plugin's
    ``tests`` and the example plugin's) that holds Python files."""
    roots = [ROOT / "tests", *sorted((ROOT / "plugins").glob("*/tests")),
             *sorted((ROOT / "examples" / "plugins").glob("*/tests"))]
    return sorted({p.parent for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts})


def test_modules_of_folders_without_init_have_unique_names():
    # pytest imports a module of a folder without __init__.py under its bare file name (the
    # folder goes on sys.path), so two such modules of the same name would collide; plugin
    # test folders cannot be packages, as their name ("tests") is the core's tests package
    seen: dict[str, Path] = {}
    clashes = []
    for folder in collected_test_folders():
        if (folder / "__init__.py").exists():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name == "conftest.py":
                continue
            if path.stem in seen:
                clashes.append(f"{path.relative_to(ROOT)} and {seen[path.stem].relative_to(ROOT)}")
            seen[path.stem] = path
    assert not clashes, "same module name in test folders without __init__.py:\n" + "\n".join(clashes)


def test_no_test_imports_a_bare_conftest_or_another_test_module():
    # which conftest.py "import conftest" finds depends on the folder pytest loaded last (a
    # package's conftest has a dotted name of its own), and importing a test module from
    # another ties the two to their file names: helpers live in a module of their own
    # (sam_helpers, dino_helpers)
    bad = []
    for folder in collected_test_folders():
        for path in sorted(folder.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "conftest" or n.split(".")[0].startswith("test_") for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "tests import a conftest or a test module:\n" + "\n".join(bad)


# -- the checkers themselves ----------------------------------------------------------------
def test_size_check_reports_every_offender_at_once(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    fine_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    files = []
    for n, body in enumerate((long_body, fine_body, long_body)):
        f = tmp_path / f"m{n}.py"
        f.write_text(f"def f():\n{body}\n", encoding="utf-8")
        files.append(f)
    big = tmp_path / "big.py"
    big.write_text("\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n", encoding="utf-8")
    files.append(big)
    found = size_offenders(files, root=tmp_path)
    assert found == ["m0.py:1 f() 61 lines", "m2.py:1 f() 61 lines", f"big.py: module {MAX_MODULE_LINES + 1} lines"]


def test_import_parsing_sees_local_imports_and_skips_type_checking(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from teacherkit.data import coco\n"
        "if TYPE_CHECKING:\n    import teacherkit.training.loop\n"
        "def f():\n    from teacherkit.training.dataset import EpochSampler\n",
        encoding="utf-8")
    known = {"teacherkit", "teacherkit.data", "teacherkit.data.coco", "teacherkit.training",
             "teacherkit.training.loop", "teacherkit.training.dataset"}
    everywhere = imported_modules("teacherkit.probe", src, known, module_level_only=False)
    at_import = imported_modules("teacherkit.probe", src, known, module_level_only=True)
    assert everywhere == {"teacherkit.data.coco", "teacherkit.training.loop", "teacherkit.training.dataset"}
    assert at_import == {"teacherkit.data.coco"}


def test_cycle_finder():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
