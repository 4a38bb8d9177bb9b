"""Untrusted text made inert wherever it is printed: a terminal line, Markdown, a manifest value.

Manifests and file names come from pull requests and messages from the factory, so any of them may
carry characters that act instead of showing themselves: ANSI and OSC escapes recolour a terminal or
retitle its window, a newline forges a line (``::warning`` in a GitHub Actions log), a bidirectional
override shows text in another order than it is (Trojan Source), a zero-width space hides in a name.
Each output goes through one of these functions, so such a character is either refused at the
manifest (``unsafe_character``) or printed as a visible ``\\u`` escape, and Markdown code spans and
text cannot be broken out of. Pure functions of the standard library, cheap to import.
"""

from __future__ import annotations

import re
import unicodedata

# What acts instead of showing itself: C0 controls but tab (newlines, ESC of ANSI/OSC sequences, BEL),
# DEL and the C1 controls (NEL, CSI), the format characters of Unicode category Cf (bidirectional
# controls U+202A-U+202E and U+2066-U+2069, marks U+200E/U+200F/U+061C, zero-width U+200B-U+200D,
# U+2060-U+2064, BOM U+FEFF, tags U+E0001-U+E007F, soft hyphen U+00AD, ...), the line and paragraph
# separators U+2028/U+2029, and lone surrogates (not text at all). Listed by range rather than computed
# from unicodedata so that importing this module costs nothing.
_FORMAT_AND_SEPARATORS = (
    "\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_CONTROLS = "\x00-\x08\x0a-\x1f"  # the C0 controls but tab
_CONTROLS_IN_FILE = "\x00-\x08\x0b\x0c\x0e-\x1f"  # in a whole file, whose lines end in LF (CR LF on Windows)
_UNSAFE = re.compile(f"[{_CONTROLS}{_FORMAT_AND_SEPARATORS}]")
_UNSAFE_IN_FILE = re.compile(f"[{_CONTROLS_IN_FILE}{_FORMAT_AND_SEPARATORS}]")
# The same two for ASCII text, where of the format characters only DEL can occur: a class this small is
# searched four times as fast (1,000 manifests: 25 -> 6 ms), and most text is ASCII.
_UNSAFE_ASCII = re.compile(f"[{_CONTROLS}\x7f]")
_UNSAFE_ASCII_IN_FILE = re.compile(f"[{_CONTROLS_IN_FILE}\x7f]")
_CONTROL_NAMES = {  # unicodedata has no names for controls; these are their Unicode aliases
    "\x00": "NULL",
    "\x07": "BELL",
    "\x08": "BACKSPACE",
    "\n": "LINE FEED",
    "\x0b": "LINE TABULATION",
    "\x0c": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
    "\x9b": "CONTROL SEQUENCE INTRODUCER",
    "\x9d": "OPERATING SYSTEM COMMAND",
}


def code_point(char: str) -> str:
    """``U+0430 CYRILLIC SMALL LETTER A``: a character as a message names it, unambiguously."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
    if not name:
        name = "a surrogate, not a character" if 0xD800 <= ord(char) <= 0xDFFF else "a control character"
    return f"U+{ord(char):04X} {name}"


def unsafe_character(text: str, *, lines: bool = False) -> tuple[int, str] | None:
    """The index and the first character of ``text`` that ``printable`` would escape, if any
    (line feeds and carriage returns excepted when ``text`` is a file of ``lines``)."""
    if text.isascii():
        match = (_UNSAFE_ASCII_IN_FILE if lines else _UNSAFE_ASCII).search(text)
    else:
        match = (_UNSAFE_IN_FILE if lines else _UNSAFE).search(text)
    return None if match is None else (match.start(), match.group())


def _escape(match: re.Match[str]) -> str:
    value = ord(match.group())
    return f"\\u{value:04x}" if value <= 0xFFFF else f"\\U{value:08x}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control, format and separator character shown as a ``\\u`` escape.

    The result is one line (unless ``newlines`` keeps line feeds, for a block the caller owns) that
    prints as what it contains: no colours, no title changes, no reordering, no forged lines.
    """
    if _UNSAFE.search(text) is None:  # the common case: nothing to escape
        return text
    if newlines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escape, text)


def md_code(text: str) -> str:
    """An inline Markdown code span holding ``text`` literally, whatever backticks it contains.

    The fence is one backtick longer than the longest run inside (CommonMark closes a span only
    on a run of the same length), and padded with spaces when the text starts or ends with one.
    """
    text = printable(text)
    if not text:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell_code(text: str) -> str:
    """``md_code`` for a table cell: GitHub splits cells at ``|`` even inside a code span unless escaped."""
    return md_code(text).replace("|", "\\|")


# What can act mid-line in GitHub Markdown: emphasis, code, links and images (``[`` and ``!`` before it),
# raw HTML and entities, table cells, strikethrough, @mentions, and the autolinks of ``https://`` and
# ``www.``. Line-start syntax (``#``, ``-``, ``1.``) cannot occur: these values never start a line.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]!<>|&~@]|:(?=//)|(?<=[wW]{3})\.")


def md_text(text: str) -> str:
    """``text`` as literal Markdown outside code: every character Markdown or HTML would act on is
    backslash-escaped (CommonMark allows it before any ASCII punctuation), so ``<img src=x>`` shows
    as text and ``|`` does not end a table cell."""
    return _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(), printable(text))
