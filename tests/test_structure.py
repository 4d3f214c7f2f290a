"""The package's shape: commands import only the shared command-line modules, and functions stay short."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hrv_diffusion"
SHARED_CLI = {"common", "flags", "context"}  # the input side every command shares


def _is_command(module: str) -> bool:
    """A command module defines ``main``; the other cli modules (common, flags, context, an application's flag
    group shared by its two commands) are shared input side."""
    path = PACKAGE / "cli" / f"{module}.py"
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
MAX_FUNCTION_LINES = 60


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_command_imports_another_command():
    sideways = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[:2] == ["hrv_diffusion", "cli"] and len(parts) > 2 and _is_command(parts[2]):
                if parts[2] != path.stem:
                    sideways.append(f"{path.name} imports {module}")
    assert not sideways, "a command may import only the shared cli modules:\n" + "\n".join(sideways)


def test_the_shared_cli_modules_are_not_commands():
    assert not [m for m in SHARED_CLI if _is_command(m)]


def test_no_package_module_imports_a_command():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "cli":
            continue
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[:2] == ["hrv_diffusion", "cli"] and len(parts) > 2 and _is_command(parts[2]):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_functions_are_at_most_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)
