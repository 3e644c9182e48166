"""Offline heuristic planner: split a natural-language request into subtasks.

Standard library only, because the worker subprocess imports this module
and must start fast. Every rule runs on a *mask* of the text: a copy of the
same length in which the inside of code (``` fences and `backticks`),
quotes, brackets, URLs and paths is hidden, and so are commas inside
numbers ("1,000"). So a comma, "and", ";" or "." in there never separates
anything. Positions found in the mask slice the original text.

Rules, in the order they are tried (the first that applies wins):

1. Lists. Lines starting with a marker (``1.``, ``1)``, ``(1)``, ``a)``,
   ``-``, ``*``, ``+``, ``•``, ``[ ]``, ``- [x]``, ``Step 1:``) are items.
   Text before the first item is the heading and becomes the shared goal.
   A heading-like line (``# Title`` or ending with ``:``) between items
   starts a section: its items get the goal "<section> for: <heading>".
   Indented sub-items are folded into their parent ("Backend: a, b, and
   c") for a worker to split later. Unmarked lines right after an item
   continue it; unmarked lines after a blank line join the shared goal.
2. One task per line: 2+ unmarked lines give one subtask each. A line ending
   with ``:`` (or ``# Title``) is a heading, as for lists. Hard-wrapped
   text is re-joined: a line continues the one before when that ends with
   "," or a connecting word ("and", "with", "the"...), when it starts with
   one ("and", "or", "with"...), or when it starts lowercase after a line of
   60+ characters, or after an instruction line when it is not one itself
   ("Build a full-stack\napplication"). When the first line is an
   instruction (starts with a task verb: "Add", "Fix"...) and there is no
   heading, lines that read as prose about it (end with "." "!" "?", or
   start with "It", "This", "Use"...) stay attached to the instruction
   before them.
3. In a one-line request, " for: <goal>" is the goal context this planner
   writes: the part before it is planned on its own and the goals chain
   ("Auth for: Backend for: Build a shop"); "a; b for: goal" is a merged
   group and splits back into its items.
4. Inline lists: "Do this: 1. x 2. y 3. z" (1, 2, 3... or a), b), c) in
   order); the text before the first number is the goal, or, when it is an
   instruction not ending with ":", is put before each item ("Add 1)
   caching and 2) retries" gives "Add caching", "Add retries").
5. "Heading: a; b; c" is a list with a heading (heading of 15 words at most).
6. Sequences: ";" always separates; ", then" / "and then" / ", and
   finally" separate, and so does " then " before a task verb, but not
   after "if"/"when"/"unless"/"once" ("If it passes, then deploy" is one
   step). A new sentence separates when it starts with a sequencing word
   (First, Next, Then, Finally...) or a task verb; other sentences are
   context and stay with the part before (or, at the start, after). No
   shared goal.
7. Enumerations, tried on the instruction sentence of a one-part request:
   a. Verb clauses: "Write the parser, add tests, and update the docs"
      splits where a comma or "and" is followed by an unambiguous task verb
      (or a verb plus "the"/"it"/...: "and test it"), the word before is
      not itself a verb ("search and replace"), the sentence starts with a
      task verb, and every clause has 2+ words. No shared goal.
   b. Introduced lists: after "with", "including", "featuring", "having",
      "containing", "covering", "supporting", "consisting of", "such as",
      "that/which has|includes|supports|contains", or ":", the items are
      separated by commas and a final "and" / "or" / "&" / "plus" (Oxford
      comma or not). The head before the introducer is the goal:
      "Authentication for: Build a REST API". Two items are enough after an
      introducer ("with frontend and backend" splits), while a bare "the
      login and logout flow" never splits, nor does a bare comma list of
      adjectives ("a fast, reliable, and secure API"). "with" is not an
      introducer after verbs that take it as a complement ("Replace X with Y
      and Z", "Run the tests with coverage and profiling"). The introducer
      used is the first whose first item holds no other introducer.
   c. Nested: an item holding its own introducer absorbs the items after
      it up to one holding an inner "and"/"or", when an outer item still
      follows. "with frontend, backend with auth, orders and payments, and
      database" gives three items; the middle one stays compound for a
      worker to split later (is_compound is True for it).
   d. "+" chains: "React + FastAPI + PostgreSQL application" gives one item
      per name, with the whole sentence as goal. Keyboard chords (Ctrl+C)
      and one-letter names (a+b) are not chains.
   e. Shared verb over a bare list of 3+ objects: "Write tests for auth.py,
      db.py, and api.py" gives "Write tests for auth.py", ... (the head ends
      at the last preposition of the first item, else after the verb). Not
      for verbs acting on the whole list ("Compare A, B, and C"), items of
      5+ words, or adjective-like shapes ("a fast, reliable, and secure
      API"). Two bare items never split ("Add a header and a footer").
   Context sentences around the instruction stay attached: to the goal, or
   to each clause when there is no goal.

Anything else, or fewer than two distinct parts, is one subtask: the request
itself, whitespace-normalised (whitespace inside code and quotes is kept).

Output: each subtask is capitalised (unless its first word looks like an
identifier: "iOS", "foo_bar", "app.py"), loses leading filler ("Please",
"Can you", "First,", "Then") and trailing ". , ; : ! ?", and gets its shared
goal appended as "<item> for: <goal>". Duplicates (case-insensitive,
whitespace-normalised, same goal) are dropped, keeping the first. With more
parts than max_tasks, adjacent parts are merged into max_tasks groups as
evenly as possible (earlier groups take the extra part): items sharing a
goal are joined with "; " before it ("Auth; users for: Build X"), other
groups join whole subtasks with "; ". Both forms plan back into the same
items, so nothing is lost and a worker can split a merged group again.
"""
from __future__ import annotations

import re
import sys
from bisect import bisect_left
from collections.abc import Iterable

MAX_TASK_CHARS = 2000
"""Size a subtask is expected to stay under. Advisory only: the planner never
truncates or cuts a part for being longer, because cutting would drop work;
a longer part is kept whole and callers may warn about it."""

_HIDDEN = "\x00"
_CONTEXT = " for: "

_Plan = list[tuple[str, str | None]]

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
"""Task verbs that are often nouns ("a build and test pipeline"): after "and"
or a comma they start a clause only before a determiner ("and test it")."""

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
"""Seen as 2nd/3rd word, the 1st was a noun: "Build times are slow" is not an
instruction."""

_WITH_COMPLEMENT = frozenset(
    """
    replace swap combine merge compare align sync synchronise synchronize pair
    link associate mix help interact communicate deal fill populate seed tag
    label wrap sign encrypt run call invoke start launch execute compile mock
    stub
    """.split()
)
"""Verbs whose "with" belongs to the verb, not to a list."""

_COLLECTIVE = _WITH_COMPLEMENT | frozenset(
    """
    choose pick select rank prioritise prioritize unify consolidate dedupe
    deduplicate diff join relate reconcile balance integrate connect
    """.split()
)
"""Verbs that act on a list as a whole ("Compare A, B, and C"): never distributed."""

_PREPOSITIONS = frozenset(
    "for to into in on of from at by across under over within inside about against via".split()
)

_PARTICLES = frozenset("up out down off over".split())

_CONTEXT_STARTERS = frozenset(
    """
    it its this that these those they them there the we our i my you your use
    using ensure note keep avoid don't dont do not must should make also
    everything all both each
    """.split()
)
"""Words that start a line of prose about an instruction rather than a task."""

_MODIFIER_KEYS = frozenset("ctrl control shift alt option opt cmd command meta super fn win".split())

_ABBREVIATIONS = frozenset(
    "e.g eg i.e ie etc vs mr mrs ms dr st no approx cf incl esp inc ltd jr sr fig vol ver".split()
)

_CONNECTOR_END = frozenset(
    "and or with to the a an of for in on including from by as at into that which & +".split()
)
_CONNECTOR_START = frozenset("and or with including plus & +".split())

# --------------------------------------------------------------------------
# Regexes. None has nested quantifiers over overlapping classes, and none is
# searched from every position of a long string, so all run in linear time.

_TRAIL_CHARS = " \t\n.,;:!?"
_SPECIAL = re.compile(r"```|[`\"“'‘]")
_BRACKET_PAIR = re.compile(r"\([^()\[\]{}\n]*\)|\[[^()\[\]{}\n]*\]|\{[^()\[\]{}\n]*\}")
_SQ_CLOSE = re.compile(r"['’](?<=\S['’])(?!\w)")
_NEEDS_MASK = re.compile(r"[`\"“'‘(\[{/\\]|\d,\d")
_NEEDS_SQUASH = re.compile(r"\s\s|[^\S ]")
_PATHLIKE = re.compile(r"(?<!\S)[^\s/\\]*[/\\]\S*")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_][\w'’-]*")
_PREV = re.compile(r"([^\W_][\w'’-]*)\s*$")
_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)"
    r"(?:(?:[-*+•·▪◦‣–—]|\d{1,3}[.)]|\(\d{1,3}\)|[a-z][.)]|\([a-z]\)"
    r"|(?i:step|task|phase|part)[ \t]*\d{1,3}[ \t]*[:.)-])"
    r"(?:[ \t]+\[[ xX]\])?|\[[ xX]\])"
    r"[ \t]+(?=\S)"
)
_POLITE = re.compile(
    r"(?:(?:please|kindly|also|and|now|additionally"
    r"|(?:can|could|would|will)\s+you(?:\s+please)?"
    r"|i\s+(?:want|need|would\s+like)\s+(?:you\s+)?to"
    r"|we\s+(?:need|want)\s+to|you\s+should|let'?s|go\s+ahead\s+and)"
    r"(?:\s*,\s*|\s+))+",
    re.IGNORECASE,
)
_SEQ_ALWAYS = re.compile(
    r"(?:and\s+then|then|finally|lastly|afterwards?|after\s+that)(?:\s*[,:]\s*|\s+)",
    re.IGNORECASE,
)
_SEQ_COMMA = re.compile(
    r"(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|fourth(?:ly)?|next)\s*[,:]\s*",
    re.IGNORECASE,
)
_SEQ_VERB = re.compile(
    r"(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|fourth(?:ly)?|next"
    r"|step\s+\d{1,3}\s*[:.)-]?)\s*",
    re.IGNORECASE,
)
_SEQ_WORDS = r"(?:then|finally|lastly|afterwards|after\s+that)\b[\s,]*"
_BOUNDARY = re.compile(
    r"(?P<semi>\s*;\s*)"
    r"|(?P<sent>(?<=[.!?])\s+)"
    rf"|(?P<then>\s*,\s*(?:and\s+)?{_SEQ_WORDS}|\s+and\s+{_SEQ_WORDS})"
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
_ETC = re.compile(r"^(?:etc\.?|and\s+so\s+on|and\s+more|\.\.\.|…)$", re.IGNORECASE)
_PLUS_CHAIN = re.compile(
    r"(?<![\w+#.])[A-Za-z][\w.#-]*(?:\+\+)?"
    r"(?:[ \t]*\+[ \t]*[A-Za-z][\w.#-]*(?:\+\+)?)+(?![\w+])"
)
_PLUS_TOKEN = re.compile(r"[A-Za-z][\w.#-]*(?:\+\+)?")
_INLINE_NUM = re.compile(r"(?<![\w.(])(?:\((\d{1,2})\)|(\d{1,2})[.)])\s+(?=\S)")
_INLINE_LETTER = re.compile(r"(?<![\w.(])\(?([a-z])\)\s+(?=\S)")
_SENTENCE_END = re.compile(r"[.!?]\s")
_PREP_IN = re.compile(r"\s(" + "|".join(sorted(_PREPOSITIONS)) + r")(?=\s)", re.IGNORECASE)
_WORDS_AFTER = re.compile(r"\s+([^\W_][\w'’-]*)")

# --------------------------------------------------------------------------
# Public API.


def split_request(request: str, max_tasks: int) -> list[str]:
    """Split a natural-language request into 1..max_tasks subtasks.

    Deterministic, and never drops text: parts beyond max_tasks are merged.
    Raises ValueError for an empty request or max_tasks < 1, TypeError for
    arguments of the wrong type.
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
    mask = _mask(text)
    planned = _plan(text, mask)
    if len(planned) < 2:
        return [_squash_pair(text, mask)[0]]
    parts = _dedupe(_finish(item, goal) for item, goal in planned)
    if len(parts) < 2:  # duplicates (or empty parts) only: keep the one task
        return [_format(*parts[0])] if parts else [_squash_pair(text, mask)[0]]
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
    Quotes and brackets must close on the same line (single quotes within
    200 characters, so apostrophes do not swallow text); ``` fences may span
    lines, and their newlines are hidden so a fenced block stays in one line.
    Brackets nest up to 6 deep. Linear time: the loop visits only quote and
    code characters, and brackets are paired by regex passes.
    """
    if not _NEEDS_MASK.search(text):
        return text
    n = len(text)
    newlines = [m.start() for m in re.finditer("\n", text)] if "\n" in text else []
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _SPECIAL.search(text, pos)
        if not m:
            break
        i = m.start()
        tok = m.group()
        if tok == "```":
            j = text.find("```", i + 3)
            if j == -1:
                pos = i + 3
                continue
            spans.append((i + 3, j))
            pos = j + 3
            continue
        k = bisect_left(newlines, i)
        line_end = newlines[k] if k < len(newlines) else n
        close = -1
        if tok == "`":
            close = text.find("`", i + 1, line_end)
        elif tok == '"':
            close = text.find('"', i + 1, line_end)
        elif tok == "“":
            close = text.find("”", i + 1, line_end)
        elif i == 0 or text[i - 1].isspace() or text[i - 1] in "([{":
            q = _SQ_CLOSE.search(text, i + 1, min(line_end, i + 200))
            close = q.start() if q else -1
        if close > i:
            spans.append((i + 1, close))
            pos = close + 1
        else:
            pos = i + 1
    work = _hide(text, spans) if spans else text
    for _ in range(6):
        found = [(m.start() + 1, m.end() - 1) for m in _BRACKET_PAIR.finditer(work)]
        if not found:
            break
        spans.extend(found)
        work = _hide(work, [(a - 1, b + 1) for a, b in found], "\x01")
    spans.extend((m.start(), m.end()) for m in _DIGIT_COMMA.finditer(text))
    for m in _PATHLIKE.finditer(text):
        a, b = m.start(), m.end()
        while a < b and text[a] in "([{'\"":
            a += 1
        while b > a and text[b - 1] in ".,;:!?)]}'\"":
            b -= 1
        spans.append((a, b))
    return _hide(text, spans)


def _hide(text: str, spans: list[tuple[int, int]], fill: str = _HIDDEN) -> str:
    """Replace the characters in spans (start, end) with fill, keeping the length."""
    out: list[str] = []
    last = 0
    for a, b in sorted(spans):
        a = max(a, last)
        if b <= a:
            continue
        out.append(text[last:a])
        out.append(fill * (b - a))
        last = b
    out.append(text[last:])
    return "".join(out)


def _squash_pair(text: str, mask: str) -> tuple[str, str]:
    """Collapse whitespace runs to one space in text and its mask alike.

    Whitespace hidden in the mask (inside code or quotes) is kept as is.
    """
    out: list[str] = []
    mout: list[str] = []
    last = 0
    for m in _SPACES.finditer(mask):
        out.append(text[last : m.start()])
        mout.append(mask[last : m.start()])
        out.append(" ")
        mout.append(" ")
        last = m.end()
    out.append(text[last:])
    mout.append(mask[last:])
    t, mk = "".join(out), "".join(mout)
    lead = len(t) - len(t.lstrip(" "))
    trail = len(t) - len(t.rstrip(" "))
    return t[lead : len(t) - trail], mk[lead : len(mk) - trail]


def _squash(text: str) -> str:
    """Collapse whitespace runs to one space, except inside code and quotes."""
    if not _NEEDS_SQUASH.search(text):
        return text.strip(" ")
    return _squash_pair(text, _mask(text))[0]


def _strip_trailing(text: str) -> str:
    """Strip trailing punctuation and a dangling "and"/"or"/"&"/"then"."""
    while True:
        stripped = text.rstrip(_TRAIL_CHARS)
        parts = stripped.rsplit(None, 1)
        if len(parts) == 2 and parts[1].lower() in {"and", "or", "&", "then"}:
            stripped = parts[0]
        if stripped == text:
            return text
        text = stripped


def _words_at(text: str, pos: int, count: int = 3) -> list[str]:
    """Up to `count` lowercased words starting at pos (commas may sit between)."""
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
    """The lowercased word right before pos (only spaces between), or ''."""
    m = _PREV.search(text, max(0, pos - 60), pos)
    return m.group(1).lower() if m else ""


def _strip_lead(text: str) -> str:
    """Drop leading politeness and sequencing words ("Please", "First,", "Then").

    At most 10 rounds: real requests have a few, and it bounds the work.
    """
    pos = 0
    for _ in range(10):
        start = pos
        for regex in (_POLITE, _SEQ_ALWAYS, _SEQ_COMMA):
            m = regex.match(text, pos)
            if m:
                pos = m.end()
        m = _SEQ_VERB.match(text, pos)
        if m and m.end() > pos and _starts_with_verb(text[m.end() : m.end() + 300]):
            pos = m.end()
        if pos == start:
            break
    return text[pos:] if pos else text


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
    return not (w3 in _AUX and w2 not in _DETERMINERS and w2 not in {"what", "which", "whatever"})


def _is_task_led(text: str) -> bool:
    """True when text reads as an instruction, after politeness/sequencing words."""
    return _starts_with_verb(_strip_lead(text[:300].lstrip()))


def _is_seq_led(text: str) -> bool:
    """True when text starts with an explicit sequencing word ("Then", "Finally")."""
    text = text[:300].lstrip()
    if _SEQ_ALWAYS.match(text) or _SEQ_COMMA.match(text):
        return True
    m = _SEQ_VERB.match(text)
    return bool(m and m.end() and _starts_with_verb(text[m.end() :]))


def _clean(text: str) -> str:
    """Normalise an item: whitespace, leading filler words, trailing punctuation."""
    return _strip_trailing(_strip_lead(_squash(text))).strip()


def _capitalise(text: str) -> str:
    """Uppercase the first letter unless the first word looks like an identifier."""
    m = _WORD.match(text)
    if not m:
        return text
    word = m.group()
    if "_" in word or any(c.isupper() for c in word[1:]):
        return text
    if m.end() < len(text) and text[m.end()] in "./\\(@_":
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
    """Join sentences in order, adding a full stop where one is missing."""
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
# Planning: each planner returns (item, goal) pairs, not yet cleaned.


def _plan(text: str, mask: str) -> _Plan:
    """Plan a whole request (mask is its mask): lines first, else one paragraph."""
    if "\n" in mask.strip():
        planned = _plan_lines(text, mask)
        if planned is not None:
            return planned
    elif _MARKER.match(text.strip()):
        # "1. a 2. b 3. c" on one line is an inline list, not one item "a 2. b 3. c".
        planned = _plan_inline_list(*_squash_pair(text, mask))
        if planned is not None:
            return planned
        planned = _plan_lines(text.strip(), _mask(text.strip()))
        if planned is not None:
            return planned
    return _plan_paragraph(*_squash_pair(text, mask))


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
        """Append a continuation line to the item (or to its last sub-item)."""
        if self.in_child:
            self.children[-1] = f"{self.children[-1]} {more}"
        else:
            self.text = f"{self.text} {more}"

    def full(self) -> str:
        """The item with sub-items folded in as "parent: a, b, and c".

        That form plans back into the sub-items (":" introduces a list).
        Sub-items holding commas or ";" are joined with "; " instead, so none
        of their text is re-split at a comma.
        """
        if not self.children:
            return self.text
        kids = [c.strip() for c in self.children]
        masks = [_mask(k) for k in kids]
        sep = " " if self.text.rstrip().endswith(":") else ": "
        if len(kids) == 1:
            body = kids[0]
        elif any("," in m or ";" in m for m in masks):
            body = "; ".join(kids)
        elif len(kids) == 2 and not _CONJ.search(masks[1]):
            body = f"{kids[0]} and {kids[1]}"
        else:
            body = ", ".join(kids[:-1]) + ", and " + kids[-1]
        return self.text.rstrip() + sep + body


def _continues(prev: str, line: str) -> bool:
    """True when line is a hard-wrapped continuation of prev."""
    if not prev:
        return False
    if line.startswith("```") or prev.endswith((",", "-")):
        return True
    last = prev.split()[-1].lower()
    first = line.split()[0].lower()
    if last in _CONNECTOR_END or first in _CONNECTOR_START:
        return True
    if not line[:1].islower() or prev[-1] in ".!?:;":
        return False
    return len(prev) >= 60 or (_is_task_led(prev) and not _is_task_led(line))


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
    blank_since_item = False  # a blank line since the last marker item
    blank_before = False  # the line just before was blank
    prev_line = ""
    cur: _Item | None = None
    for line in raw:
        if not line.strip():
            blank_before = True
            blank_since_item = bool(items)
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
            elif cur is None:  # prose under a section heading
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
        single = f"{overall}: {items[0].full()}" if overall else items[0].full()
        return _plan_paragraph(*_squash_pair(single, _mask(single)))

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
    """Attach prose lines to the instruction line before them.

    Only when the first line is an instruction: "Build a blog.\\nIt needs
    comments.\\nUse Django." is one task. A plain list of noun phrases
    ("login page", "signup page") or of short items stays one per line.
    """
    if not items or not _is_task_led(items[0].text):
        return items
    out = [items[0]]
    for item in items[1:]:
        words = _words_at(_strip_lead(item.text), 0, 1)
        prose = item.text.rstrip().endswith((".", "!", "?")) or (
            bool(words) and words[0] in _CONTEXT_STARTERS
        )
        if prose and not _is_task_led(item.text):
            out[-1].text = _join_context(out[-1].text, item.text)
        else:
            out.append(item)
    return out


def _plan_paragraph(text: str, mask: str) -> _Plan:
    """Plan one paragraph (no line structure left); mask is text's mask."""
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
    ta, tb = next((s for s in segments if _is_task_led(text[s[0] : s[1]])), segments[0])
    tb = ta + len(_strip_trailing(text[ta:tb]))
    found = _enumerate(text[ta:tb], mask[ta:tb])
    if found is None:
        return [(text, None)]
    goal, items = found
    prefix, suffix = text[start:ta].strip(), text[tb:end].lstrip(_TRAIL_CHARS)
    if goal is not None:
        return [(item, _join_context(prefix, _clean(goal), suffix)) for item in items]
    return [(_join_context(prefix, _clean(item), suffix), None) for item in items]


def _plan_context(text: str, mask: str) -> _Plan | None:
    """Parse the "<items> for: <goal>" form this planner writes."""
    if "\n" in mask or _CONTEXT not in mask:
        return None
    semis = [m.start() for m in re.finditer(";", mask)]
    if semis:
        bounds = [0, *[k + 1 for k in semis]]
        ends = [*semis, len(text)]
        segs = [(text[a:b], mask[a:b]) for a, b in zip(bounds, ends)]
        has = [_CONTEXT in m for _, m in segs]
        if all(has):  # merged group of subtasks with different goals
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
    sub = _plan_paragraph(item, mask[:k])
    if len(sub) < 2:
        return [(text, None)]
    return [(it, f"{_clean(g)}{_CONTEXT}{goal}" if g else goal) for it, g in sub]


def _plan_inline_list(text: str, mask: str) -> _Plan | None:
    """Parse "Head: 1. x 2. y" or "(a) x (b) y" lists written in one line."""
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
        head = text[: marks[0].start()].strip()
        ends = [m.start() for m in marks[1:]] + [len(text)]
        items = [text[m.end() : e] for m, e in zip(marks, ends)]
        if head and not head.endswith(":") and _is_task_led(head):
            return [(f"{head} {item.strip()}", None) for item in items]  # "Add 1) x and 2) y"
        return [(item, _clean(head) or None) for item in items]
    return None


def _plan_colon_semicolons(text: str, mask: str) -> _Plan | None:
    """Parse "Heading: a; b; c" as a list with a heading."""
    colon = mask.find(": ")
    semi = mask.find(";")
    if colon <= 0 or semi == -1 or semi < colon:
        return None
    head = text[:colon]
    if len(head.split()) > 15 or _SENTENCE_END.search(mask, 0, colon):
        return None
    cuts = [m.start() for m in re.finditer(";", mask)]
    bounds = [colon + 2, *[k + 1 for k in cuts]]
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
    segments: list[tuple[int, int, str]] = []  # (start, end, boundary after)
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
            near = text[max(seg_start, m.start() - 40) : m.start()]
            if len(near.split()) < 2 or not _is_task_led(text[m.end() : m.end() + 300]):
                continue
        if m.start() > seg_start:
            segments.append((seg_start, m.start(), kind))
        elif segments:
            segments[-1] = (segments[-1][0], segments[-1][1], kind)
        seg_start = m.end()
    if seg_start < len(text):
        segments.append((seg_start, len(text), ""))

    parts: list[list] = []  # [start, end, sentence spans, has an instruction]
    before = "start"
    for a, b, after in segments:
        head = text[a : min(b, a + 300)]
        led = _is_seq_led(head) or _is_task_led(head)
        if not parts or before in ("semi", "then", "bare") or (led and parts[-1][3]):
            parts.append([a, b, [(a, b)], led])
        else:  # context sentence, or the first instruction after leading context
            part = parts[-1]
            part[1] = b
            part[2].append((a, b))
            part[3] = part[3] or led
        before = after
    return [(a, b, spans) for a, b, spans, _ in parts if _strip_trailing(_strip_lead(text[a:b].strip()))]


def _prev_abbrev(mask: str, pos: int) -> bool:
    """True when the '.' ending at pos belongs to an abbreviation like 'e.g.'."""
    m = re.search(r"([A-Za-z.]+)\.$", mask[max(0, pos - 12) : pos])
    if not m:
        return False
    word = m.group(1).lower().strip(".")
    return word in _ABBREVIATIONS or len(word) == 1


def _enumerate(sentence: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Find an enumeration in one instruction sentence: (goal, items) or None."""
    for finder in (_verb_clauses, _introduced_list, _plus_chain, _shared_verb):
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
        if not words or mask[m.end() : m.end() + 1] == _HIDDEN:
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
    commas = [m.start() for m in re.finditer(",", mask)]
    for idx, cand in enumerate(cands):
        if not _WORD.search(text, 0, cand.start()):
            continue
        kw = cand.group("kw")
        if kw and kw.lower() == "with":
            words = _words_at(_strip_lead(text[: min(cand.start(), 300)]), 0, 1)
            if words and words[0] in _WITH_COMPLEMENT:
                continue
        k = bisect_left(commas, cand.end())
        first_end = commas[k] if k < len(commas) else len(mask)
        if idx + 1 < len(cands) and cands[idx + 1].start() < first_end:
            continue  # the first item holds another introducer: use that one
        items = _list_items(text, mask, cand.end(), commas[k:])
        if len(items) < 2:
            return None
        return text[: cand.start()].strip(), items
    return None


def _list_items(text: str, mask: str, start: int, commas: list[int]) -> list[str]:
    """Items of a comma list from start: Oxford comma or not, final and/or/&."""
    bounds = [start, *[c + 1 for c in commas]]
    ends = [*commas, len(text)]
    spans = [(a, b) for a, b in zip(bounds, ends) if text[a:b].strip()]
    if not spans:
        return []
    items: list[tuple[str, str]] = []
    oxford = False
    for n, (a, b) in enumerate(spans):
        seg, m = text[a:b], mask[a:b]
        lead = len(seg) - len(seg.lstrip())
        seg, m = seg[lead:].rstrip(), m[lead:].rstrip()
        if n > 0:
            c = _LEADING_CONJ.match(seg)
            if c:
                seg, m = seg[c.end() :], m[c.end() :]
                oxford = n == len(spans) - 1
        items.append((seg, m))
    if not oxford:  # "A, B and C" or "A and B": split the last item at its last conjunction
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
    # Nested list: an item with its own introducer absorbs the items up to the
    # next one holding "and"/"or", if an outer item still follows that one.
    next_conj = [len(merged)] * (len(merged) + 1)
    for j in range(len(merged) - 1, -1, -1):
        next_conj[j] = j if _CONJ.search(merged[j][1]) else next_conj[j + 1]
    out: list[str] = []
    i = 0
    while i < len(merged):
        seg, m = merged[i]
        j = next_conj[i + 1]
        if j < len(merged) - 1 and _INTRO.search(m):
            seg = ", ".join(s for s, _ in merged[i : j + 1])
            i = j
        out.append(seg)
        i += 1
    return [s for s in out if s.strip()]


def _shared_verb(text: str, mask: str) -> tuple[str | None, list[str]] | None:
    """Distribute a verb over a bare list of 3+ objects.

    "Write tests for auth.py, db.py, and api.py" gives "Write tests for
    auth.py", "Write tests for db.py", "Write tests for api.py". The shared
    head ends at the last preposition of the first item, else after the verb.
    Skipped for collective verbs ("Compare A, B, and C"), for long or
    verb-led items, and for shapes that read as adjective lists ("a fast,
    reliable, and secure API", "Make the app fast, secure, and accessible").
    """
    if not _is_task_led(text):
        return None
    lead = len(text) - len(_strip_lead(text))
    verb = _WORD.match(text, lead)
    if not verb or verb.group().lower() in _COLLECTIVE:
        return None
    commas = [m.start() for m in re.finditer(",", mask)]
    if not commas:
        return None
    items = _list_items(text, mask, 0, commas)
    if len(items) < 3:
        return None
    first_mask = mask[: commas[0]]
    prep = None
    for prep in _PREP_IN.finditer(first_mask, verb.end()):
        pass
    if prep is not None:
        head_end = prep.end(1)
    else:
        head_end = verb.end()
        particle = _WORDS_AFTER.match(text, head_end)
        if particle and particle.group(1).lower() in _PARTICLES:
            head_end = particle.end()
    head, first = text[:head_end].strip(), text[head_end : commas[0]].strip()
    rest = items[1:]
    if not first or any(len(i.split()) > 5 or _starts_with_verb(i) for i in rest):
        return None
    cores = [_core_words(x) for x in [first, *rest]]
    middle = cores[:-1]
    if all(c == 1 for c in middle) and cores[-1] >= 2:
        return None  # "a fast, reliable, and secure API"
    if all(c <= 1 for c in cores[1:]) and cores[0] > 1:
        return None  # "Make the app fast, secure, and accessible"
    return None, [f"{head} {x}" for x in [first, *rest]]


def _core_words(item: str) -> int:
    """Word count of an item without a leading determiner."""
    words = item.split()
    if words and words[0].lower() in _DETERMINERS:
        words = words[1:]
    return len(words)


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
    return _strip_trailing(" ".join(text.split())).casefold()


def _finish(item: str, goal: str | None) -> tuple[str, str | None]:
    """Clean one planned item and its goal (capitalised later, in _format)."""
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
        if key not in seen:
            seen.add(key)
            out.append((item, goal))
    return out


def _format(item: str, goal: str | None) -> str:
    """Render one subtask: capitalised item, then " for: <goal>" when shared."""
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
        if len({goal for _, goal in group}) == 1:
            out.append(_format("; ".join(item for item, _ in group), group[0][1]))
        else:
            out.append("; ".join(_format(item, goal) for item, goal in group))
    return out
