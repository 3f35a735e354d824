"""The layers stay one-way and the modules stay readable (docs/architecture.md).

    schemas/         imports nothing of ttsfleet but schemas
    worker/          imports schemas only
    producer/        imports schemas only (the CLI layer, producer/cli/, excepted)
    producer/cli/    the one layer that imports producer, worker and schemas
    service/         the HTTP service: imports producer and schemas, never worker (nor torch)
    bench/           imports the packages, never tests/

Every import counts, including those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "producer", "worker", "service")
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 50


def _modules(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Top-level ttsfleet packages (and `tests`) that `path` imports, as dotted module names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in (*PACKAGES, "tests", "bench")}


def _allowed(module: str) -> tuple[str, ...]:
    if module.startswith("producer.cli"):
        return (*PACKAGES,)
    if module.startswith("bench"):
        return (*PACKAGES, "bench")
    top = module.split(".")[0]
    if top == "service":
        return ("service", "producer", "schemas")
    return ("schemas",) if top == "schemas" else (top, "schemas")


@pytest.mark.parametrize("path", list(_modules(*PACKAGES, "bench")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path: Path) -> None:
    module = _module_name(path)
    allowed = _allowed(module)
    wrong = sorted(name for name in _imported(path) if name.split(".")[0] not in allowed)
    assert not wrong, f"{module} may import only {', '.join(allowed)}; it imports {', '.join(wrong)}"


def test_only_the_cli_layer_imports_both_producer_and_worker() -> None:
    # Among the packages, that is: bench/ drives whatever it measures.
    both = [_module_name(p) for p in _modules(*PACKAGES)
            if {"producer", "worker"} <= {name.split(".")[0] for name in _imported(p)}]
    assert all(name.startswith("producer.cli") for name in both), both


def test_the_direction_check_can_fail(tmp_path: Path) -> None:
    # A worker module importing the producer, even lazily inside a function, is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from producer.submit import submit\n    return submit\n", encoding="utf-8")
    assert _imported(bad) == {"producer.submit"}
    assert "producer" not in _allowed("worker.job")


@pytest.mark.parametrize("path", list(_modules(*PACKAGES)), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_fit_one_sitting(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name} has {len(lines)} lines; split it by concept"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse("\n".join(lines)))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def _runtime_imports(path: Path, known: set[str]) -> set[str]:
    """Modules among `known` that `path` imports when it runs: at module level or inside functions, but not
    under `if TYPE_CHECKING:` (annotations only). `from pkg import mod` counts as importing `pkg.mod`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return (found & known) - {_module_name(path)}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    paths = list(_modules(package))
    known = {_module_name(p) for p in paths}
    graph = {_module_name(p): _runtime_imports(p, known) for p in paths}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_can_fail() -> None:
    assert _cycle({"worker.a": {"worker.b"}, "worker.b": {"worker.c"}, "worker.c": {"worker.a"}}) == [
        "worker.a", "worker.b", "worker.c", "worker.a"]
    assert _cycle({"worker.a": {"worker.b"}, "worker.b": set()}) is None
