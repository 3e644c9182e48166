"""Program output as plain text: what a terminal would have shown, without the codes that drew it.

A gate's output reaches a worker's retry prompt, the gate's outcome and the API (quality/gates.py); raw,
it carries colour codes (125 in one prompt) and progress bars redrawn with ``\\r``, which cost
tokens and read as noise. ``plain`` is the one place that cleans such text.
"""

from __future__ import annotations

import re

# ESC sequences (ECMA-48): CSI (colours, cursor moves; ESC [ or the C1 byte), OSC (titles, links;
# ended by BEL or ST, or unended to the end), DCS/SOS/PM/APC strings (ended by ST), and the
# two-byte ones (ESC 7, ESC ( B, ESC =).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c|$)"
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")  # all but \t, \n and \r (read below)


def plain(text: str) -> str:
    """``text`` without escape sequences or control characters (tab and newline kept), and each
    line redrawn with ``\\r`` (a progress bar) reduced to what it showed last."""
    text = _ESCAPES.sub("", text)
    lines = []
    for line in text.split("\n"):
        line = line.rstrip("\r")  # CRLF, or a progress line's final return
        if "\r" in line:
            line = line.rsplit("\r", 1)[1]
        lines.append(line)
    return _CONTROLS.sub("", "\n".join(lines))
