"""Griffe extension: module constants the way this project writes them.

* Sphinx-style ``#:`` comments above an attribute become its docstring. The project documents
  module constants with them (e.g. ``BACKEND_NAMES``); griffe, mkdocstrings' source reader,
  does not read them. An attribute that has a real docstring keeps it.
* Names bound by tuple unpacking at module level (``A, B = range(2)``), which griffe skips,
  become attributes (with their value when the right side is ``range(...)`` of constants).
* A Google-style ``Example:`` section (singular, as ruff's pydocstyle accepts) is read as
  ``Examples:``, so its doctest renders as code; griffe would otherwise render it as an
  admonition of Markdown text.
* Sphinx roles in docstrings (``:func:`~jestcore.chunk_sizes```, ``:class:`PairEmbeddings```)
  become optional cross-references: a link where the target is documented, code otherwise.
* ``Any`` annotations are dropped from the rendered signatures and tables: every array
  argument is annotated ``Any`` (the library accepts any array-API array), which says nothing
  to a reader; the docstrings say what each argument is.

Loaded by mkdocstrings (see ``mkdocs.yml``).
"""

from __future__ import annotations

import ast
import functools
import re
from typing import Any

import griffe

_EXAMPLE_HEADER = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(
    r":(?:py:)?(?P<role>func|class|meth|attr|data|mod|obj|exc|const):"
    r"`(?P<tilde>~?)(?P<target>[\w.]+)`"
)


def _is_any(annotation: Any) -> bool:
    return annotation is not None and str(annotation) in {"Any", "typing.Any"}


@functools.cache
def _core_names() -> frozenset[str]:
    """``jestcore.__all__``: where an unqualified name in a docstring is documented."""
    import jestcore  # imports no framework

    return frozenset(jestcore.__all__)


def _class_path(obj: griffe.Object) -> str | None:
    """The path of ``obj`` if it is a class, else of the class it belongs to, if any."""
    while obj is not None and not obj.is_module:
        if obj.is_class:
            return obj.path
        obj = obj.parent  # type: ignore[assignment]
    return None


def _module_path(obj: griffe.Object) -> str:
    while obj.parent is not None and not obj.is_module:
        obj = obj.parent
    return obj.path


def _roles_to_autorefs(text: str, obj: griffe.Object) -> str:
    """Sphinx roles as optional mkdocs-autorefs cross-references."""

    def replace(m: re.Match[str]) -> str:
        target = m["target"]
        title = target.rsplit(".", 1)[-1] if m["tilde"] else target
        if not target.startswith("jestcore."):
            owner = _class_path(obj) if m["role"] in {"meth", "attr"} else None
            if target.split(".", 1)[0] in _core_names():
                target = f"jestcore.{target}"
            elif owner is not None and "." not in target:
                target = f"{owner}.{target}"  # a method or attribute of the same class
            else:
                target = f"{_module_path(obj)}.{target}"
        return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(replace, text)


class CommentDocstrings(griffe.Extension):
    """Reads ``#:`` comments, tuple-unpacked constants and ``Example:`` sections."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites ``Example:`` headers and Sphinx roles; drops ``Any`` annotations."""
        if obj.docstring is not None:
            value = _EXAMPLE_HEADER.sub("Examples:", obj.docstring.value)
            obj.docstring.value = _roles_to_autorefs(value, obj)
        if isinstance(obj, griffe.Function):
            for parameter in obj.parameters:
                if _is_any(parameter.annotation):
                    parameter.annotation = None
            if _is_any(obj.returns):
                obj.returns = None
        elif isinstance(obj, griffe.Attribute) and _is_any(obj.annotation):
            obj.annotation = None

    def on_attribute_instance(
        self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any
    ) -> None:
        """Sets the docstring of ``attr`` from its ``#:`` comment, when it has none."""
        code = getattr(agent, "code", None)  # the visitor reads source; the inspector does not
        if attr.docstring is not None or attr.lineno is None or not code:
            return
        lines = code.splitlines()
        comment: list[str] = []
        i = attr.lineno - 2  # the line above, 0-based
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            comment.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=i + 2, endlineno=attr.lineno - 1, parent=attr
            )

    def on_module_members(self, *, node: Any, mod: griffe.Module, **kwargs: Any) -> None:
        """Adds the module-level names bound by tuple unpacking that griffe skipped."""
        if not isinstance(node, ast.Module):
            return
        for stmt in node.body:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Tuple)
            ):
                continue
            names = [e.id for e in stmt.targets[0].elts if isinstance(e, ast.Name)]
            values = _range_values(stmt.value, len(names))
            for i, name in enumerate(names):
                if name not in mod.members:
                    attr = griffe.Attribute(
                        name,
                        lineno=stmt.lineno,
                        endlineno=stmt.end_lineno,
                        value=None if values is None else str(values[i]),
                    )
                    attr.labels.add("module-attribute")
                    mod.set_member(name, attr)


def _range_values(value: ast.expr, n: int) -> list[int] | None:
    """The values of ``range(...)`` with constant int arguments, when it yields ``n`` of them."""
    if not (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "range"
        and not value.keywords
        and all(isinstance(a, ast.Constant) and isinstance(a.value, int) for a in value.args)
    ):
        return None
    out = list(range(*(a.value for a in value.args)))  # type: ignore[attr-defined]
    return out if len(out) == n else None
