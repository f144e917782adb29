"""Griffe extension for the API reference: pan_repair's docstrings are Google style with a few
reStructuredText habits. Render them as Markdown: ``:func:`~a.b` `` -> `` `b` ``, a literal block
after ``Example::`` -> a fenced Python block, ``.. math::`` -> a fenced text block, and the
``Example:`` section -> griffe's ``Examples:`` (so doctests render as code). Only the rendered
docs change, not the code."""
from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _literal_blocks(text: str) -> str:
    """``text::`` + indented block -> ``text:`` + fenced python; ``.. math:: expr`` -> fenced text."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        math = stripped.startswith(".. math::")
        if not (math or (stripped.endswith("::") and not stripped.startswith(">>>"))):
            out.append(line)
            i += 1
            continue
        indent, block, j = _indent(line), [], i + 1
        if math:  # the expression starts on the directive's line
            block.append(" " * (indent + 4) + stripped[len(".. math::"):].strip())
        else:
            out.append(line.rstrip()[:-1])
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            j -= 1
            block.pop()
        body = [b for b in block if b.strip()]
        if body:
            # "Example::" becomes griffe's Examples section, the code indented under it
            cut, pad = min(_indent(b) for b in body), " " * (indent + 4 * (stripped == "Example::"))
            while not block[0].strip():
                block.pop(0)
            out += ["", pad + ("```text" if math else "```python"), *[pad + b[cut:] for b in block], pad + "```"]
        i = j
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            value = _ROLE.sub(_role, obj.docstring.value)
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", _literal_blocks(value))
