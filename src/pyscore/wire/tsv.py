"""TSV cells safe on a terminal and in a spreadsheet: every TSV pyscore writes (the File
Repository's table and manifests, `score-server audit`) makes its cells with `cell`.

Values come from submitters and from anonymous callers, so a cell must neither break its row
nor act on whatever shows it:
- invisible characters are written as escapes, so they can neither forge a row (tab, newline,
  and every other line break Python's `splitlines` honours) nor drive a terminal (ESC, CSI,
  DEL...) nor reorder text (bidirectional overrides): Unicode categories Cc, Cf, Cs, Zl and
  Zp become `\\t`, `\\n`, `\\r`, `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`. Backslashes are left as
  they are: TSV is for reading; exact values are in the JSON exports.
- a cell a spreadsheet would read as a formula (starting with `=`, `+`, `-` or `@`, per
  OWASP's CSV injection advice; a leading tab or CR is already escaped) gets a `'` in front,
  which spreadsheets show as text. Plain numbers (`-1`, `+2.5e3`) are left alone: they are
  read as numbers, not formulas. A cell already starting with `'` before such a character
  gets one more, so `uncell` (which our own manifest reader applies) gives back exactly the
  value written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

FORMULA = ("=", "+", "-", "@")
HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
GUARDED = re.compile(r"(?:^|\t)['=+\-@]")  # a cell that may need a `'` in front


def printable(text: str) -> str:
    """`text` with every invisible character written as an escape."""
    if text.isprintable():  # the common case, at C speed (false for any hidden character)
        return text
    return "".join(_escape(c) if unicodedata.category(c) in HIDDEN else c for c in text)


def _escape(char: str) -> str:
    named = NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _formula(text: str) -> bool:
    return text.lstrip("'")[:1] in FORMULA and not NUMBER.fullmatch(text)


def cell(value: object) -> str:
    """A value as one TSV cell (None: empty)."""
    if value is None:
        return ""
    text = printable(str(value))
    return "'" + text if text and _formula(text) else text


def uncell(text: str) -> str:
    """A cell as `cell` was given it (but for the escapes): the `'` it put before a formula
    character taken off again."""
    return text[1:] if text.startswith("'") and _formula(text) else text


def row(values: Iterable[object]) -> str:
    """One TSV line (without its newline) of these values. Most rows need neither an
    escape nor a guard: two C-speed checks of the whole line find those, and only the others
    are made cell by cell (an export of a million rows: ~3 µs a row, not ~15)."""
    texts = ["" if v is None else str(v) for v in values]
    line = "\t".join(texts)
    if "".join(texts).isprintable() and not GUARDED.search(line):
        return line
    return "\t".join(map(cell, texts))
