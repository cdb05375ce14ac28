"""Text that enters generated C: the one place where strings from a model file or the command
line are made safe. Names only ever reach C as escaped comment text or escaped string literals;
C identifiers are generated (sanitised, unique). The Jinja environment every template renders
with refuses any other text that could open or close a comment, a string, a directive or a line
splice, so a template that forgets to escape fails loudly instead of writing injectable C."""
from __future__ import annotations

import re

import jinja2

from .errors import InternalError


# Generated identifiers of the frozen quantized weights' arrays: <prefix>_w<k> (`mcutrain size`
# counts them as the flash they take).
WEIGHTS = "w"


class Safe(str):
    """Text already escaped for the place it is rendered (only this module makes these)."""


# Comment text keeps these as they are; every other byte of the UTF-8 encoding becomes %XX. No
# '*', '/', '\\', '?' or newline survives, so nothing can close the comment, splice a line or form
# a trigraph (-std=c99 honours '??/' as a backslash), whatever the bytes around it.
_COMMENT_KEEP = re.compile(rb"[A-Za-z0-9 _.,:;=+\-#()\[\]<>'\"!@$&|~^{}]")


def comment(text: str) -> Safe:
    """`text` made safe inside /* ... */ (and // ...): readable, reversible (%XX as in URLs)."""
    return Safe("".join(chr(b) if _COMMENT_KEEP.fullmatch(bytes([b])) else f"%{b:02X}"
                        for b in str(text).encode("utf-8", "surrogatepass")))


def string(text: str) -> Safe:
    """`text` as a C string literal: letters, digits and a few safe marks as they are, every other
    byte as a three-digit octal escape (no '?' survives, so no trigraph; no hex-escape run-on)."""
    body = "".join(chr(b) if re.fullmatch(rb"[A-Za-z0-9 _.,:;=+\-()\[\]<>!@$&|~^{}]", bytes([b]))
                   else f"\\{b:03o}" for b in str(text).encode("utf-8", "surrogatepass"))
    return Safe(f'"{body}"')


def identifiers(names, limit: int = 48) -> dict[str, str]:
    """A C identifier for each name: [A-Za-z0-9_] only, never starting with a digit, at most
    `limit` characters plus a suffix, and unique even upper-cased (they also name macros), so
    'a.b' and 'a_b', or 'a' and 'A', never share a symbol."""
    taken, out = set(), {}
    for name in names:
        base = re.sub(r"[^0-9A-Za-z_]", "_", name)[:limit] or "t"
        base = f"t_{base}" if base[0].isdigit() else base
        ident, k = base, 1
        while ident.upper() in taken:
            k += 1
            ident = f"{base}_{k}"
        taken.add(ident.upper())
        out[name] = ident
    return out


# Plain (unescaped) text a template may render: generated identifiers, numbers, kernel calls.
# Anything that could start a comment, string, character constant, directive, line splice or
# trigraph must come through comment() or string() instead.
_PLAIN = re.compile(r"[A-Za-z0-9_ \n.,;:()\[\]{}+\-*/=<>!&|^~%?]*")
_PLAIN_FORBIDDEN = ("/*", "*/", "//", "??", "%:")


def _finalize(value):
    if isinstance(value, Safe) or value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if _PLAIN.fullmatch(text) and not any(s in text for s in _PLAIN_FORBIDDEN):
        return text
    raise InternalError(f"refusing to write unescaped text into generated code: {text[:80]!r}")


ENV = jinja2.Environment(loader=jinja2.PackageLoader("codegen", "templates"),
                         undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                         trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
ENV.filters["comment"] = comment
ENV.filters["string"] = string
