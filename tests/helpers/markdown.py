"""What Markdown reads as markup: for tests that check hostile text cannot break out of code spans."""

from __future__ import annotations

import re


def markdown_syntax(line: str) -> str:
    """What CommonMark reads as markup on one line: the line without its code spans and with
    backslash-escaped punctuation removed (a minimal inline tokenizer for the test)."""
    out, index = [], 0
    while index < len(line):
        char = line[index]
        if char == "\\" and index + 1 < len(line) and line[index + 1] in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~":
            index += 2
            continue
        if char == "`":
            run = re.match(r"`+", line[index:]).group()
            closing = re.compile(rf"(?<!`){run}(?!`)").search(line, index + len(run))
            if closing:
                index = closing.end()
                continue
            out.append(run)
            index += len(run)
            continue
        out.append(char)
        index += 1
    return "".join(out)
