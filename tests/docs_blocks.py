"""The fenced code blocks of the README and the docs site, as the tests run them.

A page's snippets (pymdownx.snippets, as ``mkdocs.yml`` configures it: paths from the repository
root) are replaced by the files they name before blocks are read, so a block that includes an example
DAG is that DAG's code. Inside a ``python`` block the include is written in the snippets' block form
(``--8<--``, the path, ``--8<--`` on three lines), which ruff's Markdown formatter leaves alone; the
one-line form ``--8<-- "path"`` is read too. A block whose preceding non-blank line is
``<!-- not run: <reason> -->`` is marked as not run, with that reason.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"

_SNIPPET = re.compile(r'^(?P<indent>[ \t]*)--8<--[ \t]+"(?P<path>[^"]+)"[ \t]*$')
_SNIPPET_BLOCK = re.compile(
    r"^[ \t]*--8<--[ \t]*\n(?P<paths>(?:[^\n]+\n)+?)[ \t]*--8<--[ \t]*$", re.MULTILINE
)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<lang>[\w+-]*)[^\n]*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code, and why it is not run (if so)."""

    page: str  # relative to the repository root
    line: int  # of the opening fence, in the page as written (1-based)
    language: str
    code: str
    not_run: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[pathlib.Path]:
    """README.md and every page of the docs site, in a stable order."""
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def _include(path: str, depth: int) -> str:
    included = expand_snippets((REPO / path).read_text(encoding="utf-8"), depth=depth + 1)
    return included if included.endswith("\n") else included + "\n"


def expand_snippets(text: str, *, depth: int = 0) -> str:
    """``text`` with every snippet replaced by the text of the file it names (recursively)."""
    if depth > 5:
        raise AssertionError("snippets nested more than 5 deep (an include cycle?)")
    text = _SNIPPET_BLOCK.sub(
        lambda match: "".join(_include(path.strip(), depth) for path in match["paths"].splitlines()), text
    )
    out = []
    for line in text.splitlines(keepends=True):
        match = _SNIPPET.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        out.append(_include(match["path"], depth))
    return "".join(out)


def blocks_of(page: pathlib.Path) -> list[Block]:
    """The fenced blocks of ``page``, with its snippets expanded inside the blocks that include them."""
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    name = page.relative_to(REPO).as_posix()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index].rstrip("\n"))
        if opening is None:
            index += 1
            continue
        start = index
        indent, fence = opening["indent"], opening["fence"]
        body = []
        index += 1
        while index < len(lines) and lines[index].rstrip("\n").strip() != fence:
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index])
            index += 1
        index += 1  # past the closing fence
        previous = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        not_run = _NOT_RUN.match(previous)
        found.append(
            Block(
                page=name,
                line=start + 1,
                language=opening["lang"],
                code=expand_snippets("".join(body)),
                not_run=not_run["reason"] if not_run else None,
            )
        )
    # the blocks of a Markdown file a page includes whole (benchmarks/README.md, CHANGELOG.md)
    for line in lines:
        match = _SNIPPET.match(line.rstrip("\n"))
        if match and match["path"].endswith(".md"):
            for block in blocks_of(REPO / match["path"]):
                found.append(dataclasses.replace(block, page=f"{name} <- {block.page}"))
    return found


def all_blocks(language: str | None = None) -> list[Block]:
    """Every block of every page (``language``'s only, when given)."""
    return [
        block
        for page in pages()
        for block in blocks_of(page)
        if language is None or block.language == language
    ]
