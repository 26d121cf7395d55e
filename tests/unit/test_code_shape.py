"""The package's shape stays readable: no class over 300 lines and no function over 80 without
a reason written beside it (a comment on the lines just above the definition)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "layers" / "drsentry" / "drsentry"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80


def oversized(root: Path) -> list[str]:
    """`file:line name (N lines)` for every class or function over its limit with no comment
    directly above it (decorators may stand between)."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[first - 2].strip() if first >= 2 else ""
            if length > limit and not above.startswith("#"):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_class_or_function_is_oversized_without_a_reason() -> None:
    assert oversized(PACKAGE) == []


def test_the_rule_finds_an_oversized_function_and_accepts_a_reason(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "explained.py").write_text(
        f"# One table of constants, kept whole.\ndef explained():\n{body}\n"
    )
    assert oversized(tmp_path) == [f"long.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
