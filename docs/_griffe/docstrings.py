"""A griffe extension for the docs build: docstrings written for ``help()`` and doctest render as Markdown.

Two things in gym_nemo's docstrings would not render: Sphinx cross-reference roles and bare ``>>>`` blocks.

gym_nemo's docstrings name other objects the Sphinx way (``:class:`~gym_nemo.wrappers.TokenEnv` ``), which
Markdown would print verbatim. When griffe has loaded the package, each role becomes an autorefs link
(``[`TokenEnv`][gym_nemo.wrappers.token_env.TokenEnv]``) if its target is an object the API reference
renders, and code text otherwise (an env module, a private helper: things the reference does not cover).
What the reference renders is read from the ``:::`` lines of ``docs/api/*.md`` (and their ``members:``
lists), so the two cannot drift apart; a link the reference cannot satisfy still fails the strict build.
Names are resolved as Sphinx resolves them: a dotted path as written, a bare name in the scope of the
docstring's object, then of its module and packages.

A ``>>>`` block in the body of a docstring (outside an ``Examples:`` section, which griffe already reads)
would render as nested block quotes; it becomes a fenced ``pycon`` block, the same text, highlighted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from griffe import Alias, AliasResolutionError, CyclicAliasError, Extension, GriffeLoader, Module, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)\.?([\w.]+)(?:\(\))?`")
DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n)*)", re.MULTILINE)
MEMBERS = re.compile(r"^\s+members:\s*\[([^\]]*)\]", re.MULTILINE)
DOCTEST = re.compile(r"^>>> .*\n(?:^(?!\s*$).*\n?)*", re.MULTILINE)  # from a >>> line at column 0 to a blank line


def rendered_in(api_dir: Path) -> dict[str, set[str] | None]:
    """``:::`` identifier -> its ``members:`` list (``None``: every public, documented member)."""
    rendered: dict[str, set[str] | None] = {}
    for page in sorted(api_dir.glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            members = MEMBERS.search(match.group(2))
            rendered[match.group(1)] = {m.strip() for m in members.group(1).split(",")} if members else None
    return rendered


class MarkdownDocstrings(Extension):
    """Rewrites Sphinx roles into autorefs links or code text, and fences bare doctest blocks."""

    def __init__(self, api_dir: str | None = None) -> None:
        self.rendered = rendered_in(Path(api_dir) if api_dir else Path(__file__).resolve().parents[1] / "api")

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                text = ROLE.sub(lambda m, obj=obj: self._replace(m, obj, loader), obj.docstring.value)
                obj.docstring.value = DOCTEST.sub(_fence, text)

    def _replace(self, match: re.Match[str], scope: Object, loader: GriffeLoader) -> str:
        short, target = match.group(1) == "~", match.group(2)
        title = target.rsplit(".", 1)[-1] if short else target
        found = _resolve(target, scope, loader)
        if found is not None and self._is_rendered(found):
            return f"[`{title}`][{found.path}]"
        return f"`{title}`"

    def _is_rendered(self, obj: Object) -> bool:
        """Whether the API reference shows ``obj`` (and so has an anchor for its path)."""
        if obj.path in self.rendered:
            return True
        chain = [obj]
        while chain[-1].parent is not None and chain[-1].parent.path not in self.rendered:
            chain.append(chain[-1].parent)
        root = chain[-1].parent
        if root is None:
            return False
        members = self.rendered[root.path]
        if members is not None and chain[-1].name not in members:
            return False
        return all(not o.name.startswith("_") and o.has_docstrings and not o.is_module for o in chain)


def _fence(match: re.Match[str]) -> str:
    return f"\n```pycon\n{match.group(0).rstrip()}\n```\n"


def _walk(obj: Object) -> list[Object]:
    found = [obj]
    for member in obj.members.values():
        if not isinstance(member, Alias):
            found.extend(_walk(member))
    return found


def _resolve(target: str, scope: Object, loader: GriffeLoader) -> Object | None:
    """The object ``target`` names, seen from ``scope``: as written, then relative to each enclosing scope."""
    candidates = [target]
    node: Object | None = scope
    while node is not None:
        candidates.append(f"{node.path}.{target}")
        node = node.parent
    for path in candidates:
        try:
            obj = loader.modules_collection.get_member(path)
            return obj.final_target if isinstance(obj, Alias) else obj
        except (KeyError, ValueError, AliasResolutionError, CyclicAliasError):  # not there, or outside the package
            continue
    return None
