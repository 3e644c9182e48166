"""Offline heuristic planner: split a natural-language request into subtasks.

Standard library only, because the worker subprocess imports this module
and must start fast. Each rule below runs on a *mask* of the text: a copy
of the same length in which everything inside code, quotes, brackets, URLs
and paths is replaced by NUL, so commas, "and", ";" or "." inside them can
never act as separators. Positions found in the mask slice the original.

Rules, in the order they are tried (the first that applies wins):

1. Lists. Lines starting with a marker (``1.``, ``1)``, ``(1)``, ``a)``,
   ``-``, ``*``, ``+``, ``•``, ``[ ]``, ``- [x]``, ``Step 1:``) are items.
   Text before the first item is the heading; it becomes the shared goal.
   A heading-like line (``# Title`` or ending with ``:``) between items
   starts a section whose items get "<section> for: <heading>" as goal.
   Indented sub-items are folded into their parent as "parent: a; b" so a
   worker can split them later. Unmarked lines right after an item continue
   it; unmarked lines after a blank line join the shared goal.
2. One task per line: 2+ unmarked lines are one subtask each. A line ending
   with ``:`` (or ``# Title``) is a heading, as for lists. Hard-wrapped
   text is re-joined: a line continues the previous one when that ends with
   "," or a connecting word ("and", "with", "the", ...), when it starts with
   such a word, or when it starts lowercase after a long (60+ chars) line.
   Without a heading, if some lines are instructions (start with a task
   verb: "Add", "Fix", ...) the other lines are context and stay attached
   to the instruction before them.
3. Inside a single paragraph, a trailing " for: <goal>" is the goal context
   written by this planner; the part before it is planned on its own and
   the goals chain ("auth for: Backend for: Build a shop").
4. Inline numbered lists: "Do this: 1. x 2. y 3. z" (numbers 1, 2, 3... or
   letters a), b), c) in order).
5. "Heading: a; b; c" is a list with a heading.
6. Sequences: ";" always separates; ", then" / "and then" / " then <verb>"
   separate (not after "if"/"when": "If it passes, then deploy" is one);
   a new sentence separates when it starts with a sequencing word (First,
   Next, Then, Finally...) or a task verb, otherwise it is context attached
   to the part before it. Sequencing and politeness words that start a
   part ("First,", "Then", "Please", "Can you") are dropped. No shared
   goal.
7. Enumerations, on the instruction sentence of a one-part paragraph:
   a. Verb clauses: "Write the parser, add tests, and update docs" splits
      where a comma or "and" is followed by a clear task verb, and the
      sentence itself starts with one. No shared goal.
   b. Introduced lists: after "with", "including", "featuring", "that has",
      "such as", ":" (...), the items separated by commas and a final
      "and" / "or" / "&" (Oxford comma or not). The head before the
      introducer is the goal: "Authentication for: Build a REST API".
      Two items need an introducer ("with frontend and backend" splits);
      a bare "the login and logout flow" never does. "with" is not an
      introducer after verbs that take it as a complement ("Replace X with
      Y and Z"). The introducer used is the first one whose first item does
      not itself contain an introducer. Nested lists: an item holding its
      own introducer absorbs the items that follow it up to one that holds
      an inner "and"/"or", if an outer item still follows: "with frontend,
      backend with auth, orders and payments, and database" gives three
      items, the middle one left compound for a worker to split later.
   c. "+" chains: "React + FastAPI + PostgreSQL application" gives one item
      per name; the goal is the whole sentence. Keyboard chords (Ctrl+C)
      and one-letter names are not chains.
   Other context sentences of the paragraph stay attached (to the goal, or
   to each clause when there is none).

Anything else, or fewer than two distinct parts, is one subtask: the request
itself, whitespace-normalised (whitespace inside ``` code fences is kept).

Output: each subtask is capitalised (unless its first word is an identifier
such as "iOS" or "foo_bar"), trailing ". , ; : ! ?" are stripped, and a shared
goal is appended as "<item> for: <goal>". Duplicates (case-insensitive,
whitespace-normalised, same goal) are dropped, keeping the first. When there
are more parts than max_tasks, adjacent parts are merged into max_tasks
groups as evenly as possible (earlier groups take the extra part): items
with one goal are joined with "; " before the goal ("Auth; users for: Build
X"), which plans back into the same items, so nothing is lost. Parts are
never truncated: MAX_TASK_CHARS is advisory.
"""
from __future__ import annotations

import re
import sys
from bisect import bisect_left
from collections.abc import Iterable

MAX_TASK_CHARS = 2000
"""Size a subtask is expected to stay under. Advisory only: a longer part is
kept whole rather than truncated, because cutting text would drop work."""

_HIDDEN = "\x00"

# --------------------------------------------------------------------------
# Vocabulary.

_VERBS = frozenset(
    """
    add adapt adjust analyse analyze annotate archive audit automate backfill
    benchmark bootstrap build bump change check clean cleanup code compile
    configure connect containerise containerize convert create debug decouple
    define delete deploy deprecate design develop diagnose disable document
    dockerise dockerize draft drop enable encrypt evaluate expand explain
    export expose extend extract fetch fix format generate handle harden hook
    implement import improve increase initialise initialize install instrument
    integrate introduce investigate lint localise localize make measure migrate
    minify mock modernise modernize modify monitor move normalise normalize
    optimise optimize organise organize outline package paginate parallelise
    parallelize parse patch polish port prepare profile prototype provision
    publish rebuild redesign reduce refactor refine release remove rename
    render reorganise reorganize repair replace reproduce research resolve
    restructure review rewrite run sanitise sanitize scaffold secure serve set
    setup ship simplify sort speed split standardise standardize streamline
    stub summarise summarize support sync test tidy train translate triage
    tune update upgrade upload validate verify wire write
    """.split()
)
"""Words that make a sentence or clause an instruction when they start it."""

_AMBIGUOUS = frozenset(
    """
    archive benchmark build bump change check clean code compile connect
    design document draft drop export fetch format handle hook import lint
    minify mock move outline package paginate parse patch polish port profile
    prototype provision release render repair reproduce research review run
    secure serve set ship sort speed split stub support sync test tidy train
    triage tune upload wire
    """.split()
)
"""Task verbs that are often nouns ("a build and test pipeline"): they start a
new clause after "and" only when a determiner follows ("and test it")."""

_STRONG = _VERBS - _AMBIGUOUS

_PREV_BLOCK = _VERBS | frozenset(
    "search read write login logout signin signup sign copy paste save undo "
    "redo drag find get put post input output plug".split()
)
"""A word before "and" that blocks a clause split ("search and replace")."""

_DETERMINERS = frozenset(
    "the a an it its them their this that these those all every each any some "
    "our my your both new existing unit more missing proper basic".split()
)

_AUX = frozenset(
    "is are was were has have had should must will can could would does do did "
    "seems seem looks keeps needs".split()
)
"""A second word like this means the first word was a noun subject: "Build
times are slow" is a statement, not an instruction."""

_WITH_COMPLEMENT = frozenset(
    """
    replace swap combine merge compare align sync synchronise synchronize pair
    link associate mix help interact communicate deal fill populate seed tag
    label wrap sign encrypt run call invoke start launch execute compile mock
    stub
    """.split()
)
"""Verbs whose "with" is part of the verb, not a list introducer."""

_MODIFIER_KEYS = frozenset(
    "ctrl control shift alt option opt cmd command meta super fn win".split()
)

_ABBREVIATIONS = frozenset(
    "e.g eg i.e ie etc vs mr mrs ms dr st no approx cf incl esp inc ltd jr sr "
    "fig vol ver".split()
)

# --------------------------------------------------------------------------
# Regexes. All are linear: no nested quantifiers over overlapping classes.

_WORD = re.compile(r"[^\W_][\w'’-]*")
_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)"
    r"(?:(?:[-*+•·▪◦‣–—]|\d{1,3}[.)]|\(\d{1,3}\)|[a-z][.)]|\([a-z]\)"
    r"|(?i:step|task|phase|part)[ \t]*\d{1,3}[ \t]*[:.)-])"
    r"(?:[ \t]+\[[ xX]\])?|\[[ xX]\])"
    r"[ \t]+(?=\S)"
)
_POLITE = re.compile(
    r"^(?:(?:please|kindly|also|and|now|additionally|"
    r"(?:can|could|would|will)\s+you(?:\s+please)?|"
    r"i\s+(?:want|need|would\s+like)\s+(?:you\s+)?to|"
    r"we\s+(?:need|want)\s+to|you\s+should|let'?s|go\s+ahead\s+and)"
    r"(?:\s*,\s*|\s+))+",
    re.IGNORECASE,
)
_SEQ_ALWAYS = re.compile(
    r"^(?:and\s+then|then|finally|lastly|afterwards?|after\s+that)(?:\s*[,:]\s*|\s+)",
    re.IGNORECASE,
)
_SEQ_COMMA = re.compile(
    r"^(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|fourth(?:ly)?|next)\s*[,:]\s*",
    re.IGNORECASE,
)
_SEQ_VERB = re.compile(
    r"^(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|fourth(?:ly)?|next|"
    r"step\s+\d{1,3}\s*[:.)-]?)\s*",
    re.IGNORECASE,
)
_BOUNDARY = re.compile(
    r"(?P<semi>\s*;\s*)"
    r"|(?P<sent>(?<=[.!?])\s+)"
    r"|(?P<then>\s*,\s*(?:and\s+)?then\b[\s,]*|\s+and\s+then\b[\s,]*)"
    r"|(?P<bare>\s+then\s+)",
    re.IGNORECASE,
)
_CONDITIONAL = re.compile(r"\b(?:if|when|whenever|unless|once)\b", re.IGNORECASE)
_CLAUSE_JOIN = re.compile(r",\s*(?:(?:and|&)\s+)?|\s+(?:and|&)\s+", re.IGNORECASE)
_INTRO = re.compile(
    r"\s+(?P<kw>with|including|featuring|having|containing|covering|comprising"
    r"|supporting|consisting\s+of|such\s+as"
    r"|(?:that|which)\s+(?:has|have|includes?|supports?|contains?))\s+"
    r"|(?<=\S)(?P<colon>:)\s+",
    re.IGNORECASE,
)
_CONJ = re.compile(r"\s+(?:and|or|&|plus)\s+", re.IGNORECASE)
_LEADING_CONJ = re.compile(r"^(?:and/or|and|or|&|plus|as\s+well\s+as)\s+", re.IGNORECASE)
_TRAILING = re.compile(r"(?:[\s.,;:!?]+|[\s,;]+(?:and|or|&|then))+$", re.IGNORECASE)
_ETC = re.compile(r"^(?:etc\.?|and\s+so\s+on|and\s+more|\.\.\.|…)$", re.IGNORECASE)
_PLUS_CHAIN = re.compile(
    r"(?<![\w+#.])[A-Za-z][\w.#-]*(?:\+\+)?(?:[ \t]*\+[ \t]*[A-Za-z][\w.#-]*(?:\+\+)?)+(?![\w+])"
)
_PLUS_TOKEN = re.compile(r"[A-Za-z][\w.#-]*(?:\+\+)?")
_INLINE_NUM = re.compile(r"(?<![\w.(])(?:\((\d{1,2})\)|(\d{1,2})[.)])\s+(?=\S)")
_INLINE_LETTER = re.compile(r"(?<![\w.(])\(?([a-z])\)\s+(?=\S)")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_TOKEN = re.compile(r"\S+")
_CONTEXT = " for: "

_Plan = list[tuple[str, str | None]]

# --------------------------------------------------------------------------
# Public API.


def split_request(request: str, max_tasks: int) -> list[str]:
    """Split a natural-language request into 1..max_tasks subtasks.

    Deterministic, and never drops text: parts beyond max_tasks are merged.
    Raises ValueError for an empty request or max_tasks < 1.
    """
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
        raise TypeError(f"max_tasks must be an int, got {type(max_tasks).__name__}")
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
    if not isinstance(request, str):
        raise TypeError(f"request must be a str, got {type(request).__name__}")
    if not request.strip():
        raise ValueError("request is empty: describe the work to be done")
    text = request.replace("\r\n", "\n").replace("\r", "\n")
    parts = _dedupe(_finish(item, goal) for item, goal in _plan(text))
    if len(parts) < 2:
        return [_squash(text)]
    return _merge(parts, max_tasks)


def is_compound(task: str) -> bool:
    """True when split_request(task, large) yields 2 or more parts.

    The simulated worker uses this to decide whether to recurse. An empty or
    whitespace task is not compound (rather than an error): there is nothing
    to split.
    """
    if not isinstance(task, str) or not task.strip():
        return False
    return len(split_request(task, sys.maxsize)) >= 2


class HeuristicPlanner:
    """Planner interface over split_request, for code that picks a planner by name."""

    name = "heuristic"

    def plan(self, request: str, max_tasks: int) -> list[str]:
        """Split request into 1..max_tasks subtasks (see split_request)."""
        return split_request(request, max_tasks)


# --------------------------------------------------------------------------
# Masking and text helpers.


def _mask(text: str) -> str:
    """Return text with the inside of code, quotes, brackets and paths hidden.

    Same length as text, so positions found in the mask slice the original.
    Quotes and brackets must close on the same line; ``` fences may span lines
    (their newlines are hidden too, so a fenced block stays in one line).
    """
    chars = list(text)
    n = len(text)
    pairs = _bracket_pairs(text)

    def hide(a: int, b: int) -> None:
        for k in range(a, b):
            chars[k] = _HIDDEN

    i = 0
    while i < n:
        c = text[i]
        line_end = text.find("\n", i)
        if line_end == -1:
            line_end = n
        if c == "`" and text.startswith("```", i):
            j = text.find("```", i + 3)
            if j == -1:
                i += 3
                continue
            hide(i + 3, j)
            i = j + 3
            continue
        close = -1
        if c == "`":
            close = text.find("`", i + 1, line_end)
        elif c == '"':
            close = text.find('"', i + 1, line_end)
        elif c == "“":
            close = text.find("”", i + 1, line_end)
        elif c in "'‘" and (i == 0 or text[i - 1].isspace() or text[i - 1] in "([{"):
            close = _closing_single_quote(text, i + 1, min(line_end, i + 200))
        elif c in "([{":
            close = pairs.get(i, -1)
        if close > i:
            hide(i + 1, close)
            i = close + 1
        else:
            i += 1
    masked = "".join(chars)
    out = list(masked)
    for m in _DIGIT_COMMA.finditer(masked):
        out[m.start()] = _HIDDEN
    for m in _TOKEN.finditer(masked):
        tok = m.group()
        if "/" not in tok and "\\" not in tok:
            continue
        a, b = m.start(), m.end()
        while a < b and masked[a] in "([{'\"":
            a += 1
        while b > a and masked[b - 1] in ".,;:!?)]}'\"":
            b -= 1
        for k in range(a, b):
            out[k] = _HIDDEN
    return "".join(out)


def _bracket_pairs(text: str) -> dict[int, int]:
    """Map each opening bracket to its matching close on the same line (one pass)."""
    pairs: dict[int, int] = {}
    stack: list[tuple[str, int]] = []
    closers = {")": "(", "]": "[", "}": "{"}
    for k, c in enumerate(text):
        if c == "\n":
            stack.clear()
        elif c in "([{":
            stack.append((c, k))
        elif c in closers and stack and stack[-1][0] == closers[c]:
            pairs[stack.pop()[1]] = k
    return pairs


def _closing_single_quote(text: str, start: int, end: int) -> int:
    """Position of a closing ' (not an apostrophe inside a word), or -1."""
    for k in range(start, end):
        if text[k] in "'’" and k > start and not text[k - 1].isspace():
            if k + 1 >= len(text) or not (text[k + 1].isalnum() or text[k + 1] == "_"):
                return k
    return -1


def _squash(text: str) -> str:
    """Collapse whitespace runs to one space, except inside code and quotes."""
    mask = _mask(text)
    out: list[str] = []
    last = 0
    for m in re.finditer(r"\s+", mask):
        out.append(text[last : m.start()])
        out.append(" ")
        last = m.end()
    out.append(text[last:])
    return "".join(out).strip()


def _words_at(text: str, pos: int, count: int = 3) -> list[str]:
    """The next `count` words (lowercased) starting at pos."""
    words: list[str] = []
    k = pos
    while len(words) < count:
        m = _WORD.search(text, k, min(len(text), k + 80))
        if not m or text[k : m.start()].strip(" ,"):
            break
        words.append(m.group().lower())
        k = m.end()
    return words


def _prev_word(text: str, pos: int) -> str:
    """The word (lowercased) just before pos, or ''."""
    m = re.search(r"([^\W_][\w'’-]*)\W*$", text[max(0, pos - 60) : pos])
    return m.group(1).lower() if m else ""


def _strip_lead(text: str) -> str:
    """Drop leading politeness and sequencing words ("Please", "First,", "Then")."""
    prev = None
    while prev != text:
        prev = text
        text = _POLITE.sub("", text, count=1)
        text = _SEQ_ALWAYS.sub("", text, count=1)
        text = _SEQ_COMMA.sub("", text, count=1)
        m = _SEQ_VERB.match(text)
        if m and _starts_with_verb(text[m.end() :]):
            text = text[m.end() :]
    return text


def _starts_with_verb(text: str) -> bool:
    """True when text starts with a task verb used as an instruction."""
    words = _words_at(text, 0)
    if not words or words[0] not in _VERBS:
        return False
    w2 = words[1] if len(words) > 1 else ""
    w3 = words[2] if len(words) > 2 else ""
    if words[0] == "make" and w2 == "sure":
        return False
    if w2 in _AUX:
        return False
    if w3 in _AUX and w2 not in _DETERMINERS and w2 not in {"what", "which", "whatever"}:
        return False
    return True


def _is_task_led(text: str) -> bool:
    """True when text reads as an instruction, after politeness/sequencing words."""
    return _starts_with_verb(_strip_lead(text.lstrip()))


def _is_seq_led(text: str) -> bool:
    """True when text starts with an explicit sequencing word ("Then", "Finally")."""
    text = text.lstrip()
    if _SEQ_ALWAYS.match(text) or _SEQ_COMMA.match(text):
        return True
    m = _SEQ_VERB.match(text)
    return bool(m and _starts_with_verb(text[m.end() :]))


def _clean(text: str) -> str:
    """Normalise an item: whitespace, leading filler words, trailing punctuation."""
    text = _squash(text)
    text = _strip_lead(text)
    return _TRAILING.sub("", text).strip()


def _capitalise(text: str) -> str:
    """Uppercase the first letter unless the first word looks like an identifier."""
    m = _WORD.match(text)
    if not m:
        return text
    word = m.group()
    if "_" in word or any(c.isupper() for c in word[1:]):
        return text
    if text[m.end() : m.end() + 1] in {".", "/", "\\", "(", "@", "_"} and m.end() < len(text):
        return text
    first = word[0].upper()
    if len(first) != 1:
        return text
    return first + text[1:]


def _heading_text(line: str) -> str:
    """A heading line as goal text: no '#' prefix, no trailing ':'."""
    return _clean(line.strip().lstrip("#").strip())


def _is_heading_line(line: str) -> bool:
    """A markdown '# Title' or a line ending with ':' (not a code fence)."""
    s = line.strip()
    if s.startswith("```"):
        return False
    return s.startswith("#") or s.endswith(":")


def _join_context(*pieces: str) -> str:
    """Join sentences, adding a full stop where one is missing."""
    out = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if out and out[-1] not in ".!?:;":
            out += "."
        out = f"{out} {piece}" if out else piece
    return out


# --------------------------------------------------------------------------
# Planning.


def _plan(text: str) -> _Plan:
    """Return (item, goal) pairs for text, before cleaning and merging."""
    mask = _mask(text)
    lines = [ln for ln in mask.split("\n") if ln.strip()]
    if len(lines) >= 2 or any(_MARKER.match(t) for t in _lines(text, mask)):
        planned = _plan_lines(text, mask)
        if planned is not None:
            return planned
    return _plan_paragraph(_squash(text))


def _lines(text: str, mask: str) -> list[str]:
    """Lines of text, split where the mask has newlines (fenced code stays whole)."""
    out: list[str] = []
    pos = 0
    for mline in mask.split("\n"):
        out.append(text[pos : pos + len(mline)])
        pos += len(mline) + 1
    return out


class _Item:
    """A list item being assembled: text, sub-items and section."""

    __slots__ = ("text", "children", "section", "in_child")

    def __init__(self, text: str, section: str | None) -> None:
        self.text = text
        self.children: list[str] = []
        self.section = section
        self.in_child = False

    def extend(self, more: str) -> None:
        """Append a continuation line to the item (or its last sub-item)."""
        if self.in_child:
            self.children[-1] = f"{self.children[-1]} {more}"
        else:
            self.text = f"{self.text} {more}"

    def full(self) -> str:
        """The item with sub-items folded in as 'parent: a; b'."""
        if not self.children:
            return self.text
        sep = " " if self.text.rstrip().endswith(":") else ": "
        return self.text.rstrip() + sep + "; ".join(c.strip() for c in self.children)


_CONNECTOR_END = frozenset(
    "and or with to the a an of for in on including from by as at into that which & + ,".split()
)
_CONNECTOR_START = frozenset("and or with including plus & +".split())


def _continues(prev: str, line: str) -> bool:
    """True when line is a hard-wrapped continuation of prev."""
    prev = prev.rstrip()
    if not prev or line.startswith("```"):
        return bool(prev)
    if prev.endswith(",") or prev.endswith("-"):
        return True
    last = prev.split()[-1].lower()
    first = line.split()[0].lower()
    if last in _CONNECTOR_END or first in _CONNECTOR_START:
        return True
    return len(prev) >= 60 and line[:1].islower()


def _plan_lines(text: str, mask: str) -> _Plan | None:
    """Plan a multi-line request: marker lists, or one task per line.

    Returns None when the lines turn out to form one paragraph.
    """
    raw = _lines(text, mask)
    has_marker = any(_MARKER.match(t) for t in raw)
    preamble: list[str] = []
    trailer: list[str] = []
    items: list[_Item] = []
    section: str | None = None
    sections_after = False
    base_indent: int | None = None
    blank_since_item = False  # marker mode: a blank line since the last item
    blank_before = False  # the line just before was blank
    prev_line = ""
    cur: _Item | None = None
    for line in raw:
        if not line.strip():
            blank_before = True
            if items:
                blank_since_item = True
            continue
        stripped = line.strip()
        indented = line[:1].isspace()
        marker = _MARKER.match(line) if has_marker else None
        if marker:
            indent = len(marker.group("indent").expandtabs(4))
            body = line[marker.end() :].strip()
            if base_indent is None:
                base_indent = indent
            if cur is not None and indent >= base_indent + 2:
                cur.children.append(body)
                cur.in_child = True
            else:
                cur = _Item(body, section)
                items.append(cur)
            blank_since_item = False
        elif _is_heading_line(stripped) and (not items or not indented):
            if not items:
                preamble.append(stripped)
            else:
                section = _heading_text(stripped)
                sections_after = True
                cur = None
        elif has_marker:
            if not items:
                preamble.append(stripped)
            elif cur is None:
                section = _join_context(section or "", _clean(stripped))
            elif indented or not blank_since_item:
                cur.extend(stripped)
            else:
                trailer.append(stripped)
        elif stripped.startswith("```") and (cur is not None or preamble):
            if cur is not None:
                cur.extend(stripped)
            else:
                preamble[-1] = f"{preamble[-1]} {stripped}"
        elif cur is not None and not blank_before and _continues(prev_line, stripped):
            cur.extend(stripped)
        else:
            cur = _Item(stripped, section)
            items.append(cur)
        prev_line = stripped
        blank_before = False

    first_section: str | None = None
    if sections_after and preamble and _is_heading_line(preamble[-1]):
        first_section = _heading_text(preamble.pop())
    overall = _join_context(*(_heading_text(p) for p in preamble + trailer))

    if not has_marker and not preamble and not sections_after:
        items = _attach_context_lines(items)
    if not items:
        return None
    if len(items) == 1:
        if not has_marker:
            return None
        single = items[0].full()
        return _plan_paragraph(_squash(f"{overall}: {single}" if overall else single))

    plan: _Plan = []
    for item in items:
        sec = item.section if item.section is not None else first_section
        if sec and overall:
            goal: str | None = f"{sec}{_CONTEXT}{overall}"
        else:
            goal = sec or overall or None
        plan.append((item.full(), goal))
    return plan


def _attach_context_lines(items: list[_Item]) -> list[_Item]:
    """Attach non-instruction lines to the instruction before them.

    Applies only when some lines are instructions and others are not; a
    plain list of noun phrases ("login page", "signup page") stays as is.
    """
    led = [_is_task_led(it.text) for it in items]
    if not any(led) or all(led):
        return items
    out: list[_Item] = []
    pending: list[str] = []
    for item, is_led in zip(items, led):
        if is_led:
            if pending:
                item.text = _join_context(*pending, item.text)
                pending = []
            out.append(item)
        elif out:
            out[-1].text = _join_context(out[-1].text, item.text)
        else:
            pending.append(item.text)
    return out


def _plan_paragraph(text: str) -> _Plan:
    """Plan one paragraph (no line structure left)."""
    mask = _mask(text)
    for planner in (_plan_context, _plan_inline_list, _plan_colon_semicolons):
        planned = planner(text, mask)
        if planned is not None:
            return planned
    parts = _sequence(text, mask)
    if len(parts) >= 2:
        return [(text[a:b], None) for a, b, _ in parts]
    if not parts:
        return [(text, None)]
    start, end, segments = parts[0]
    task = next((s for s in segments if _is_task_led(text[s[0] : s[1]])), segments[0])
    ta, tb = task
    sentence = text[ta:tb]
    smask = mask[ta:tb]
    trailing = len(sentence) - len(_TRAILING.sub("", sentence))
    sentence, smask = sentence[: len(sentence) - trailing], smask[: len(smask) - trailing]
    found = _enumerate(sentence, smask)
    if found is None:
        return [(text, None)]
    goal, items = found
    prefix, suffix = text[start:ta].strip(), text[tb:end].strip()
    if goal is not None:
        return [(item, _join_context(prefix, _clean(goal), suffix)) for item in items]
    return [(_join_context(prefix, _clean(item), suffix), None) for item in items]


def _plan_context(text: str, mask: str) -> _Plan | None:
    """Parse the "<items> for: <goal>" form this planner writes."""
    if "\n" in mask or _CONTEXT not in mask:
        return None
    semis = [k for k, c in enumerate(mask) if c == ";"]
    if semis:
        bounds = [0, *[k + 1 for k in semis]]
        ends = [*semis, len(text)]
        segs = [(text[a:b], mask[a:b]) for a, b in zip(bounds, ends)]
        has = [_CONTEXT in m for _, m in segs]
        if all(has):
            out: _Plan = []
            for seg, m in segs:
                k = m.index(_CONTEXT)
                out.append((seg[:k], seg[k + len(_CONTEXT) :]))
            return out
        if any(has[:-1]):
            return None
        last, lmask = segs[-1]
        k = lmask.index(_CONTEXT)
        goal = last[k + len(_CONTEXT) :]
        return [(seg, goal) for seg, _ in segs[:-1]] + [(last[:k], goal)]
    k = mask.index(_CONTEXT)
    item, goal = text[:k], text[k + len(_CONTEXT) :]
    if not item.strip() or not goal.strip():
        return None
    sub = _plan_paragraph(_squash(item))
    if len(sub) < 2:
        return [(text, None)]
    return [(it, f"{_clean(g)}{_CONTEXT}{goal}" if g else goal) for it, g in sub]


def _plan_inline_list(text: str, mask: str) -> _Plan | None:
    """Parse "Head: 1. x 2. y" / "(a) x (b) y" lists written on one line."""
    for regex, first in ((_INLINE_NUM, "1"), (_INLINE_LETTER, "a")):
        marks: list[re.Match[str]] = []
        expect = first
        for m in regex.finditer(text):
            if mask[m.start()] == _HIDDEN:
                continue
            value = next(g for g in m.groups() if g is not None)
            if value == expect:
                marks.append(m)
                expect = str(int(expect) + 1) if expect.isdigit() else chr(ord(expect) + 1)
        if len(marks) < 2:
            continue
        head = _clean(text[: marks[0].start()])
        ends = [m.start() for m in marks[1:]] + [len(text)]
        items = [text[m.end() : e] for m, e in zip(marks, ends)]
        return [(item, head or None) for item in items]
    return None


def _plan_colon_semicolons(text: str, mask: str) -> _Plan | None:
    """Parse "Heading: a; b; c" as a list with a heading."""
    colon = mask.find(": ")
    semi = mask.find(";")
    if colon <= 0 or semi == -1 or semi < colon:
        return None
    head = text[:colon]
    if len(head.split()) > 15 or re.search(r"[.!?]\s", mask[:colon]):
        return None
    body_start = colon + 2
    cuts = [k for k in range(body_start, len(mask)) if mask[k] == ";"]
    bounds = [body_start, *[k + 1 for k in cuts]]
    ends = [*cuts, len(text)]
    items = [text[a:b] for a, b in zip(bounds, ends) if text[a:b].strip()]
    if len(items) < 2:
        return None
    return [(item, _clean(head)) for item in items]


def _sequence(text: str, mask: str) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Split a paragraph into ordered parts: (start, end, sentence spans).

    ";" and "then" connectors always start a new part; a new sentence does
    when it is an instruction and the current part already has one.
    """
    conditionals = [m.start() for m in _CONDITIONAL.finditer(mask)]
    segments: list[tuple[int, int, str]] = []
    seg_start = 0
    for m in _BOUNDARY.finditer(mask):
        kind = m.lastgroup or ""
        if kind == "sent":
            nxt = mask[m.end() : m.end() + 1]
            if nxt.islower() or _prev_abbrev(mask, m.start()):
                continue
        if kind in ("then", "bare"):
            k = bisect_left(conditionals, seg_start)
            if k < len(conditionals) and conditionals[k] < m.start():
                continue
        if kind == "bare":
            if len(text[seg_start : m.start()].split()) < 2 or not _is_task_led(text[m.end() :]):
                continue
        if m.start() > seg_start:
            segments.append((seg_start, m.start(), kind))
        elif segments:
            segments[-1] = (segments[-1][0], segments[-1][1], kind)
        seg_start = m.end()
        # The kind recorded with a segment is the boundary *after* it; shift below.
    if seg_start < len(text):
        segments.append((seg_start, len(text), ""))
    if not segments:
        return []

    parts: list[tuple[int, int, list[tuple[int, int]], bool]] = []
    before = "start"
    for a, b, after in segments:
        body = text[a:b]
        led = _is_seq_led(body) or _is_task_led(body)
        if not parts:
            parts.append((a, b, [(a, b)], led))
        elif before in ("semi", "then", "bare") or (led and parts[-1][3]):
            parts.append((a, b, [(a, b)], led))
        else:
            pa, _, spans, pled = parts[-1]
            parts[-1] = (pa, b, [*spans, (a, b)], pled or led)
        before = after
    out = []
    for a, b, spans, _ in parts:
        if _clean(text[a:b]):
            out.append((a, b, spans))
    return out


def _prev_abbrev(mask: str, pos: int) -> bool:
    """True when the '.' ending at pos belongs to an abbreviation like 'e.g.'."""
    m = re.search(r"([A-Za-z.]+)\.$", mask[max(0, pos - 12) : pos])
    if not m:
        return False
    word = m.group(1).lower().strip(".")
    return word in _ABBREVIATIONS or len(word) == 1


def _enumerate(sentence: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Find an enumeration in one instruction sentence: (goal, items) or None."""
    for finder in (_verb_clauses, _introduced_list, _plus_chain):
        found = finder(sentence, mask)
        if found is not None and len({_key(i) for i in found[1]}) >= 2:
            return found
    return None


def _verb_clauses(text: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Split "Fix the bug, add tests and update the docs" into its clauses."""
    if not _is_task_led(text):
        return None
    cuts: list[tuple[int, int]] = []
    for m in _CLAUSE_JOIN.finditer(mask):
        words = _words_at(text, m.end(), 2)
        if not words:
            continue
        verb = words[0]
        nxt = words[1] if len(words) > 1 else ""
        if verb == "make" and nxt == "sure":
            continue
        if not (verb in _STRONG or (verb in _VERBS and nxt in _DETERMINERS)):
            continue
        if _prev_word(mask, m.start()) in _PREV_BLOCK:
            continue
        cuts.append((m.start(), m.end()))
    if not cuts:
        return None
    bounds = [0, *[e for _, e in cuts]]
    ends = [*[s for s, _ in cuts], len(text)]
    clauses = [text[a:b].strip() for a, b in zip(bounds, ends)]
    if any(len(c.split()) < 2 for c in clauses):
        return None
    return None, clauses


def _introduced_list(text: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Split "Build X with A, B, and C" into items with goal "Build X"."""
    cands = list(_INTRO.finditer(mask))
    commas = [k for k, c in enumerate(mask) if c == ","]
    for idx, cand in enumerate(cands):
        head = text[: cand.start()].strip()
        if not _WORD.search(head):
            continue
        if cand.group("kw") and cand.group("kw").lower() == "with":
            words = _words_at(_strip_lead(head), 0, 1)
            if words and words[0] in _WITH_COMPLEMENT:
                continue
        k = bisect_left(commas, cand.end())
        first_end = commas[k] if k < len(commas) else len(mask)
        if idx + 1 < len(cands) and cands[idx + 1].start() < first_end:
            continue
        items = _list_items(text, mask, cand.end(), commas[k:])
        if len(items) < 2:
            return None
        return head, items
    return None


def _list_items(text: str, mask: str, start: int, commas: list[int]) -> list[str]:
    """Items of a comma list from start: Oxford comma or not, final and/or/&."""
    bounds = [start, *[c + 1 for c in commas]]
    ends = [*commas, len(text)]
    spans = [(a, b) for a, b in zip(bounds, ends) if text[a:b].strip()]
    if not spans:
        return []
    items: list[tuple[str, str]] = []
    for n, (a, b) in enumerate(spans):
        seg, m = text[a:b], mask[a:b]
        lead = len(seg) - len(seg.lstrip())
        seg, m = seg[lead:].rstrip(), m[lead:].rstrip()
        if n > 0:
            c = _LEADING_CONJ.match(seg)
            if c:
                seg, m = seg[c.end() :], m[c.end() :]
        items.append((seg, m))
    last_seg = text[spans[-1][0] : spans[-1][1]].strip()
    if len(spans) == 1 or not _LEADING_CONJ.match(last_seg):
        seg, m = items[-1]
        conj = None
        for conj in _CONJ.finditer(m):
            pass
        if conj is not None:
            items[-1:] = [(seg[: conj.start()], m[: conj.start()]), (seg[conj.end() :], m[conj.end() :])]
    merged: list[tuple[str, str]] = []
    for seg, m in items:
        if merged and _ETC.match(seg.strip()):
            prev, pm = merged[-1]
            merged[-1] = (f"{prev}, {seg.strip()}", f"{pm}, {seg.strip()}")
        else:
            merged.append((seg, m))
    out: list[str] = []
    i = 0
    while i < len(merged):
        seg, m = merged[i]
        if _INTRO.search(m) and i + 1 < len(merged) - 1:
            for j in range(i + 1, len(merged) - 1):
                if _CONJ.search(merged[j][1]):
                    seg = ", ".join(s for s, _ in merged[i : j + 1])
                    i = j
                    break
        out.append(seg)
        i += 1
    return [s for s in out if s.strip()]


def _plus_chain(text: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Split "Create a React + FastAPI + PostgreSQL app" into the named parts."""
    for m in _PLUS_CHAIN.finditer(mask):
        tokens = [t.rstrip(".") for t in _PLUS_TOKEN.findall(text[m.start() : m.end()])]
        if len(tokens) < 2:
            continue
        if any(len(t) < 2 or t.lower() in _MODIFIER_KEYS for t in tokens):
            continue
        return text, tokens
    return None


# --------------------------------------------------------------------------
# Output.


def _key(text: str) -> str:
    """Comparison key: case-insensitive, whitespace-normalised, no trailing punctuation."""
    return _TRAILING.sub("", " ".join(text.split())).casefold()


def _finish(item: str, goal: str | None) -> tuple[str, str | None]:
    """Clean one planned item and its goal (not yet capitalised)."""
    cleaned_goal = _clean(goal) if goal else ""
    return _clean(item), cleaned_goal or None


def _dedupe(parts: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Drop empty and repeated parts (same item and goal), keeping the first."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str | None]] = []
    for item, goal in parts:
        if not item:
            continue
        key = (_key(item), _key(goal or ""))
        if key in seen:
            continue
        seen.add(key)
        out.append((item, goal))
    return out


def _format(item: str, goal: str | None) -> str:
    """Render one subtask: capitalised item, then ' for: goal' when shared."""
    item = _capitalise(item)
    return f"{item}{_CONTEXT}{_capitalise(goal)}" if goal else item


def _merge(parts: list[tuple[str, str | None]], max_tasks: int) -> list[str]:
    """Merge adjacent parts into max_tasks groups as evenly as possible.

    Earlier groups take one extra part when the split is uneven. Items that
    share a goal are joined with "; " in front of it; mixed goals join whole
    rendered subtasks with "; ". Either form plans back into the same parts.
    """
    if len(parts) <= max_tasks:
        return [_format(item, goal) for item, goal in parts]
    size, extra = divmod(len(parts), max_tasks)
    out: list[str] = []
    pos = 0
    for g in range(max_tasks):
        n = size + (1 if g < extra else 0)
        group = parts[pos : pos + n]
        pos += n
        goals = {goal for _, goal in group}
        if len(goals) == 1:
            out.append(_format("; ".join(item for item, _ in group), group[0][1]))
        else:
            out.append("; ".join(_format(item, goal) for item, goal in group))
    return out
