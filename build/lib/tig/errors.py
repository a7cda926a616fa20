"""The project's errors and the one sanitiser for what reaches a terminal or a report.

At the bottom of the import graph: every module may import it, it imports nothing of the
project. cli.run maps UserError to a one-line message and exit status 1.
"""
import re


class UserError(Exception):
    """A problem with the user's input or files; printed as one line, exit status 1."""


# control characters (ESC, BEL, CR, LF, ...), bidirectional overrides, embeddings, isolates and marks,
# and the line/paragraph separators: none may reach a terminal or a report as itself
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text):
    """The one sanitiser for every string that reaches a terminal or a report (texts, class names,
    paths, messages, library warnings): control characters and bidirectional controls become U+FFFD,
    so a line stays one line and shows what it holds. Tabs are kept."""
    return _CONTROL.sub("\ufffd", str(text))


def has_control(text):
    """True when printable(text) would change it."""
    return bool(_CONTROL.search(str(text)))
