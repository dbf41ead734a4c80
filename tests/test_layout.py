"""The widget layer stays in rooms a reader can find (issue 18): sizes as a symptom to watch.

Checked for ``attnwidget/widget.py``, ``attnwidget/_*.py`` and ``js/src/*.ts``:
every file under :data:`MAX_FILE_LINES` lines, no function or method longer than
:data:`MAX_FUNCTION_LINES` lines, and ``js/src/index.ts`` (wiring only) at most
:data:`MAX_INDEX_LINES` lines. A line count includes blank lines, comments and
docstrings: it is what a reader scrolls through.

Python functions are measured with :mod:`ast` (``def`` line to last line,
decorators left out). TypeScript has no parser here, so :func:`ts_functions`
is a brace-depth scanner; its limits are in its docstring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 400  # a file at or above this is several jobs
MAX_FUNCTION_LINES = 80  # Python or TypeScript, nested functions included in their parent
MAX_INDEX_LINES = 150  # index.ts wires the parts together; anything more belongs in a part

PY_FILES = sorted([ROOT / "attnwidget" / "widget.py", *(ROOT / "attnwidget").glob("_*.py")])
PY_FILES = [p for p in PY_FILES if not p.name.startswith("__")]  # _x.py, not __init__/__main__
TS_FILES = sorted((ROOT / "js" / "src").glob("*.ts"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def py_functions(source: str) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, line count)`` of every function and method in ``source``."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                name += "."
            elif isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}."
            visit(child, name)

    visit(ast.parse(source), "")
    return out


_STRIP = re.compile(r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`""",
                    re.DOTALL)
_KEYWORDS = {"if", "for", "while", "switch", "catch", "return", "function", "else", "do", "with"}
# a method or object-literal function: `name(args) {` or `name(args): Type {` on one line
_METHOD = re.compile(r"^\s*(?:(?:public|private|protected|static|async|get|set)\s+)*"
                     r"(?P<name>[A-Za-z_$][\w$]*)\s*\([^()]*\)\s*(?::\s*[^={};]+)?\{\s*$")
_FUNCTION = re.compile(r"\bfunction\b\s*\*?\s*(?P<name>[A-Za-z_$][\w$]*)?")
_ARROW = re.compile(r"=>\s*\{")


def _blank(match: re.Match[str]) -> str:
    # keep the newlines so line numbers stay right; drop the text, so no brace in it counts
    return re.sub(r"[^\n]", " ", match.group(0))


def ts_functions(source: str) -> list[tuple[str, int, int]]:
    """``(name, first line, line count)`` of the functions in TypeScript ``source``.

    A function starts at a ``function`` keyword (its body is the first ``{`` after
    its parameter list closes), at ``=> {`` (an arrow with a block body) or at a line
    ``name(args) {`` / ``name(args): Type {`` (a method); it ends at the ``}`` that
    brings the brace depth back. Comments, strings and template literals are blanked
    first. Limits: a regex literal holding a brace, a template literal whose ``${}``
    holds a string with a backtick, a type literal ``{...}`` in a ``function``'s
    return type or a method whose parameters span lines or hold parentheses are
    measured wrongly or not at all; arrow functions with an expression body are not
    functions here (they have no block to grow).
    """
    text = _STRIP.sub(_blank, source)
    starts: list[tuple[int, int, str]] = []  # (offset of the first line, of the body's "{", name)
    for m in _FUNCTION.finditer(text):
        depth, i = 0, text.find("(", m.end())
        while i != -1 and i < len(text):  # skip the parameter list, then take the next "{"
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        brace = text.find("{", i)
        if brace != -1:
            starts.append((m.start(), brace, m.group("name") or "(anonymous)"))
    for m in _ARROW.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        name = re.search(r"(?:const|let|var)\s+([A-Za-z_$][\w$]*)|([A-Za-z_$][\w$]*)\s*[:=(]",
                         text[line_start:m.start()])
        label = (name.group(1) or name.group(2)) if name else "(arrow)"
        starts.append((m.start(), m.end() - 1, "(arrow)" if label in _KEYWORDS else label))
    offset = 0
    for line in text.splitlines(keepends=True):
        m = _METHOD.match(line)
        if m and m.group("name") not in _KEYWORDS and not _FUNCTION.search(line) and not _ARROW.search(line):
            starts.append((offset, offset + line.rindex("{"), m.group("name")))
        offset += len(line)
    out = []
    for start, brace, name in sorted(set(starts)):
        depth = 0
        for i in range(brace, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                first, last = text.count("\n", 0, start) + 1, text.count("\n", 0, i) + 1
                out.append((name, first, last - first + 1))
                break
    return out


def test_the_typescript_scanner_finds_each_kind_of_function():
    source = "\n".join([
        "// function commented() { }",
        "export function outer(a: number,",
        "                      b: string): void {",
        "  const s = \"}}} {\"; const t = `${a} }`;",
        "  const inner = (x: number) => {",
        "    return x;",
        "  };",
        "  const expr = (x: number) => x + 1;",
        "}",
        "const obj = {",
        "  method(y) {",
        "    if (y) {",
        "      return 1;",
        "    }",
        "  },",
        "};",
        "class C {",
        "  private go(): number {",
        "    return 2;",
        "  }",
        "}",
    ])
    found = sorted(ts_functions(source))
    assert found == [("go", 18, 3), ("inner", 5, 3), ("method", 11, 5), ("outer", 2, 8)]


def test_the_python_measure_names_methods_and_nested_functions():
    source = ("class A:\n    def f(self):\n        def g():\n            pass\n        return g\n\n\n"
              "async def h():\n    pass\n")
    assert py_functions(source) == [("A.f", 2, 4), ("A.f.g", 3, 2), ("h", 8, 2)]


@pytest.mark.parametrize("path", PY_FILES + TS_FILES, ids=_id)
def test_each_file_of_the_widget_layer_is_under_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_FILE_LINES, f"{_id(path)}: {lines} lines, expected fewer than {MAX_FILE_LINES}"


@pytest.mark.parametrize("path", PY_FILES + TS_FILES, ids=_id)
def test_no_function_of_the_widget_layer_runs_past_80_lines(path):
    source = path.read_text(encoding="utf-8")
    functions = py_functions(source) if path.suffix == ".py" else ts_functions(source)
    long = [f"{name} (line {first}): {n} lines" for name, first, n in functions if n > MAX_FUNCTION_LINES]
    assert not long, f"{_id(path)}: functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_index_ts_is_wiring():
    lines = len((ROOT / "js" / "src" / "index.ts").read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_INDEX_LINES, f"js/src/index.ts: {lines} lines, expected at most {MAX_INDEX_LINES}"
