"""The source text of on-demand transformations: what is stored, what is shown, what runs.

A transformation is stored as the text of its function (dedented, decorators dropped) and
that text is what runs: compiled in a fresh namespace, the function taken by its name.
Nothing is unpickled, so the code that runs is the code a reader of the view sees.

Besides its arguments, a transformation may use only:

- names it defines itself, including modules it imports inside its body;
- Python's builtins;
- the modules in ``PROVIDED``: ``np``/``numpy``, ``pd``/``pandas``, ``pa``/``pyarrow``,
  ``math``, ``datetime`` (the module), ``re``.

Any other global name, or a variable of an enclosing function, is refused when the
transformation is defined (the stored text would not carry it), naming what is missing.
So is a name the defining module binds to something else than what the transformation
would get (``from datetime import datetime``, a shadowed builtin).

This is not a sandbox: the source runs with the rights of the process applying it (a
training job, a serving process), so it is only as trustworthy as the views' editors.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import importlib
import inspect
import symtable
import textwrap
from collections.abc import Callable
from types import ModuleType
from typing import Any

from plinth.errors import InvalidArgument

# name in the transformation -> the module it is
PROVIDED: dict[str, str] = {
    "np": "numpy",
    "numpy": "numpy",
    "pd": "pandas",
    "pandas": "pandas",
    "pa": "pyarrow",
    "pyarrow": "pyarrow",
    "math": "math",
    "datetime": "datetime",
    "re": "re",
}
_BUILTINS = frozenset(dir(builtins))
_ALLOWED = ", ".join(sorted(PROVIDED))
_RULE = (
    "a transformation is stored as its source text, so besides its arguments it may use "
    "only names it defines or imports inside its body, builtins and the modules "
    f"{_ALLOWED}"
)
# Annotations are kept as text, never evaluated: the stored source has no imports for them.
_FLAGS = __future__.annotations.compiler_flag


def source_of(fn: Callable[..., Any]) -> str:
    """The text to store for ``fn``: its ``def``, dedented, without decorators. Refused,
    naming why, when that text would not run on its own."""
    if not inspect.isfunction(fn):
        raise InvalidArgument(
            f"a transformation must be a function defined with def, not {type(fn).__name__}"
        )
    if fn.__name__ == "<lambda>":
        raise InvalidArgument(
            "a transformation cannot be a lambda (its source is not a statement of its own "
            "that can be stored and run); define it with def"
        )
    if hasattr(fn, "__wrapped__"):  # getsource would give the inner function's text only
        raise InvalidArgument(
            f"transformation {fn.__name__!r} is wrapped by a decorator, which its stored source "
            "would not carry; apply @plinth.on_demand to the plain function"
        )
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise InvalidArgument(
            f"the source of {fn.__name__!r} cannot be read ({e}); define the transformation "
            "with def in a file or notebook cell"
        ) from e
    source, node = _def_only(text, fn.__name__)
    if node.name != fn.__name__:
        raise InvalidArgument(
            f"the source read for {fn.__name__!r} defines {node.name!r} (was its file changed "
            "since it was imported?); define the transformation with def in a file or notebook "
            "cell"
        )
    enclosing = set(fn.__code__.co_freevars)
    missing = sorted(_unknown(source, node.name))
    if missing:
        closure = [n for n in missing if n in enclosing]
        other = [n for n in missing if n not in enclosing]
        what = []
        if closure:
            what.append(f"the variables {closure} of the function that encloses it")
        if other:
            what.append(f"the names {other}, defined outside it")
        raise InvalidArgument(
            f"transformation {fn.__name__!r} uses {' and '.join(what)}; {_RULE}. Pass values "
            "as inputs or request values, or write them into the function"
        )
    _check_same_meaning(fn, source)
    return source


def check_source(source: str, name: str) -> tuple[str, str]:
    """Refuse a stored text that is not one self-contained ``def`` (what a server checks
    before storing a view: nothing runs here); else the text to run and the def's name."""
    if not source:
        raise InvalidArgument(
            f"transformation {name!r} carries no source; make it with @plinth.on_demand on a "
            "function defined with def"
        )
    text, node = _def_only(source, name)
    missing = sorted(_unknown(text, node.name))
    if missing:
        raise InvalidArgument(
            f"transformation {name!r} uses the names {missing}, which its source does not "
            f"define; {_RULE}"
        )
    _compile(text, node.name)
    return text, node.name


def load(source: str, name: str, view: str) -> Callable[..., Any]:
    """The function a stored source defines, compiled and run in a fresh namespace."""
    try:
        text, def_name = check_source(source, name)
    except InvalidArgument as e:
        raise InvalidArgument(
            f"transformation {name!r} of {view} cannot run: {e.message}. Re-create the view "
            "version from the function"
        ) from e
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "plinth.transformation"}
    namespace.update({alias: _module(module) for alias, module in PROVIDED.items()})
    try:
        exec(_compile(text, def_name), namespace)  # the stored text: that is the point
    except Exception as e:  # defaults of the def are the user's code too
        raise InvalidArgument(
            f"transformation {name!r} of {view} cannot be defined: {type(e).__name__}: {e}"
        ) from e
    fn = namespace[def_name]
    if not callable(fn):
        raise InvalidArgument(f"transformation {name!r} of {view} is not a function")
    return fn  # type: ignore[no-any-return]


def _def_only(text: str, name: str) -> tuple[str, ast.FunctionDef]:
    """The text of the one ``def`` in ``text`` from its ``def`` line on (decorators, which
    made it a transformation, are not part of what runs), and its node."""
    odd = sorted({repr(c) for c in text if c in _OTHER_LINE_BREAKS})
    if odd:
        # Python and str.splitlines disagree on where their lines end: refused, so that
        # the function shown is the function run
        raise InvalidArgument(
            f"the source of transformation {name!r} holds line or page breaks other than "
            f"newlines ({', '.join(odd)}): write it with plain newlines"
        )
    text = textwrap.dedent(text)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # any text may come
        raise InvalidArgument(f"the source of transformation {name!r} does not parse: {e}") from e
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise InvalidArgument(
            f"the source of transformation {name!r} must be exactly one function defined with "
            "def (not a lambda, an async def or several statements)"
        )
    node = tree.body[0]
    lines = text.split("\n")[node.lineno - 1 : node.end_lineno]
    return "\n".join(lines) + "\n", node


_OTHER_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _unknown(text: str, own: str) -> set[str]:
    """The global names ``text`` reads that a fresh namespace would not have."""
    try:
        read = _read_names(text)
    except (SyntaxError, RecursionError, MemoryError) as e:
        raise InvalidArgument(f"the source of {own!r} is too deeply nested to check: {e}") from e
    return read - _BUILTINS - set(PROVIDED) - {own}


class _Unannotated(ast.NodeTransformer):
    """Annotations are kept as text, never evaluated: the names in them are not needed."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.Assign:
        value = self.visit(node.value) if node.value is not None else ast.Constant(None)
        return ast.copy_location(ast.Assign(targets=[node.target], value=value), node)


def _check_same_meaning(fn: Callable[..., Any], source: str) -> None:
    # A provided or builtin name the defining module binds to something else would mean
    # one thing where the function was written and another where its source runs.
    defined: dict[str, Any] = getattr(fn, "__globals__", {})
    for name in sorted(_read_names(source) & (set(PROVIDED) | _BUILTINS)):
        if name.startswith("__") or name not in defined:
            continue
        value = defined[name]
        if name in PROVIDED:
            same = isinstance(value, ModuleType) and value.__name__ == PROVIDED[name]
            meant = f"the module {PROVIDED[name]}"
        else:
            same = value is getattr(builtins, name)
            meant = "the builtin"
        if not same:
            raise InvalidArgument(
                f"transformation {fn.__name__!r} uses {name!r}, which is {value!r} where it is "
                f"defined but {meant} where its stored source runs; import what you mean "
                "inside the function body"
            )


def _read_names(text: str) -> set[str]:
    """The global names ``text`` reads (in any scope of it), by Python's own scoping."""
    tree = _Unannotated().visit(ast.parse(text))
    tables = [symtable.symtable(ast.unparse(tree), "<transformation>", "exec")]
    read: set[str] = set()
    while tables:
        table = tables.pop()
        read.update(
            s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()
        )
        tables += table.get_children()
    return read


def _compile(text: str, name: str) -> Any:
    try:
        return compile(text, f"<transformation {name}>", "exec", flags=_FLAGS, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise InvalidArgument(f"the source of transformation {name!r} does not compile: {e}") from e


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)
