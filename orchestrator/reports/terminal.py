"""Text for a terminal, whoever wrote it: control characters shown, never sent.

A worker writes tasks (a child job's), file names, messages, logs; a terminal that receives an
escape sequence in them obeys it: OSC 52 writes the clipboard, OSC 0 sets the window title, CSI 2J
clears the screen, a carriage return or a bidirectional override hides what follows. So every
command's terminal output goes through :func:`visible` (the command line wraps its stdout and
stderr in :class:`VisibleStream` for the whole command: cli/main.py), which writes each such
character as an escape a reader sees (``\\x1b]52;c;...\\x07``) and keeps newlines and tabs. The
few writers that must send bytes as they are (a diff or a log piped to a file, the watch view's own
redraw) write to :func:`raw`.
"""

from __future__ import annotations

import io
import re
from typing import TextIO

from .. import defences

# C0 controls but newline and tab, DEL, C1 controls (U+0080-U+009F: U+009B is CSI to some terminals),
# the line and paragraph separators and the bidirectional overrides and isolates ("Trojan Source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\x1b": "\\x1b"}


def _shown(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def visible(text: str) -> str:
    """``text`` with each control character written as an escape (``\\x1b``, ``\\x07``, ``\\r``,
    ``\\u202e``), newlines and tabs kept: what a terminal shows instead of obeying."""
    if defences.off("terminal"):  # (the hostile suite's switch: orchestrator/defences.py)
        return text
    return _CONTROL.sub(_shown, text) if _CONTROL.search(text) else text


class VisibleStream(io.TextIOBase):
    """A text stream that writes through :func:`visible` to ``stream`` (kept as ``raw``)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.raw = stream

    def write(self, text: str) -> int:
        self.raw.write(visible(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", "utf-8")

    @property
    def buffer(self) -> object:
        """The binary stream beneath (bytes written there go as they are: only for :func:`raw`'s cases)."""
        return self.raw.buffer


def raw(stream: TextIO) -> TextIO:
    """The stream beneath ``stream`` when it is a :class:`VisibleStream`, else ``stream``: for bytes
    that must go as they are (a patch piped to ``git apply``, the watch view's cursor moves)."""
    return stream.raw if isinstance(stream, VisibleStream) else stream


__all__ = ["VisibleStream", "raw", "visible"]
