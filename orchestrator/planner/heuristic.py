"""Offline heuristic planner: split a request into subtasks and the goal they share.

Standard library only (the simulated worker imports it at start-up). It knows the shapes people
write; anything else stays one subtask, and reading it is the AI planner's job. Rules run on a
*mask*, a same-length copy of the text with code, quotes, brackets, paths/URLs and "1,000"
commas hidden, so nothing in there separates; positions found in the mask slice the text.

1. Lists: marker lines (``1.`` ``1)`` ``(1)`` ``a)`` ``-`` ``*`` ``•`` ``[ ]`` ``Step 1:``), or
   "1. a 2. b 3. c" in one line. Text above the list, and a paragraph after a blank line below
   it, is the goal. A heading between items (``# Backend``, ``Backend:``) prefixes its items
   ("Backend: REST API"); indented sub-items fold into their parent ("Backend: a and b").
2. Lines: one subtask per line, a heading line first being the goal; hard-wrapped lines are
   joined back, and prose after an instruction ("It should use React.") stays with it.
3. A paragraph: "Heading: a; b; c", "a; b; c", "Head: 1. x 2. y", or, in its one instruction
   sentence (other sentences join the goal), verb clauses ("Fix X and add Y"), a list after an
   introducer ("Build X with A, B and C", goal "Build X"), a "+" chain ("React + Flask app"),
   or a verb shared by 3+ objects ("Write tests for a.py, b.py, and c.py").

A sequence (then, finally, afterwards; two instruction sentences) is one subtask: its steps
depend on each other. Parts beyond max_tasks merge into adjacent "a; b" groups: nothing is lost.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from dataclasses import dataclass, field

MAX_TASK_CHARS = 2000
"""Advisory size of a subtask: a longer part is kept whole (cutting would drop work)."""


@dataclass
class Plan:
    """The subtasks of a request, and the goal they are all part of (None: none shared)."""

    tasks: list[str]
    goal: str | None = None


_HIDDEN = "\x00"
_VERBS = frozenset(
    """add analyse analyze audit automate benchmark build bump change check clean code configure
    containerize convert create debug define delete deploy design develop document draft enable evaluate expand explain
    export extend extract fetch fix format generate harden implement import improve install instrument integrate
    introduce investigate lint localize make measure migrate mock modernize modify move optimise optimize organize
    package parse patch polish port prepare profile prototype publish rebuild redesign refactor release remove rename
    render repair replace reproduce research resolve restructure review rewrite run scaffold secure set setup ship
    simplify speed split stub summarise summarize support sync test train translate tune update upgrade upload validate
    verify write""".split()
)
_NOUNISH = frozenset(
    """benchmark build bump change check clean code design document draft export fetch format import
    lint mock move package parse patch polish port profile prototype release render repair reproduce research review
    run secure set ship speed split stub support sync test train tune upload""".split()
)
"""Verbs that are often nouns ("a build and test pipeline"): a clause only before "the", "it"..."""
_PREV_BLOCK = _VERBS | frozenset("search read write login logout sign copy find save get put post".split())
"""A word before "and" that makes "and <verb>" one noun ("search and replace")."""
_WITH_VERBS = frozenset(
    "replace swap combine merge compare pair run call execute start launch compile mock stub fill seed wrap sign".split()
)
"""Verbs whose "with" is their complement ("Replace X with Y and Z"), not a list."""
_DETERMINERS = frozenset(
    "the a an it its them their this that these those all every each any some our my your both "
    "new existing unit more missing".split()
)
_AUX = frozenset("is are was were has have had should must will can could would does do did needs".split())
_CONTEXT_WORDS = frozenset("it its this that these those they the we use using ensure note keep avoid also".split())
_CONNECT_END = frozenset("and or with to the a an of for in on including from by as at into that which & +".split())
_CONNECT_START = frozenset("and or with including plus & +".split())

# Linear-time regexes: none can backtrack over a long stretch of text.
_MASKED = re.compile(
    r"```.*?```|`[^`\n]*`|\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]{1,200}?'(?!\w)|(?<=\d),(?=\d)"
    r"|(?<!\S)[^\s/\\]*[/\\]\S*?(?=[.,;:!?)\]}'\"]*(?:\s|$))",
    re.S,
)
_BRACKETS = re.compile(r"\([^()\[\]{}\n]*\)|\[[^()\[\]{}\n]*\]|\{[^()\[\]{}\n]*\}")
_MARKER = re.compile(
    r"^([ \t]*)(?:(?:[-*+•·▪◦‣–—]|\d{1,3}[.)]|\(\d{1,3}\)|[a-z][.)]|\([a-z]\)"
    r"|(?i:step|task|phase|part)[ \t]*\d{1,3}[ \t]*[:.)-])(?:[ \t]+\[[ xX]\])?|\[[ xX]\])[ \t]+(?=\S)"
)
_POLITE = re.compile(
    r"(?:(?:please|kindly|also|and|now|(?:can|could|would|will)\s+you(?:\s+please)?"
    r"|i\s+(?:want|need|would\s+like)\s+(?:you\s+)?to|we\s+(?:need|want)\s+to|let'?s"
    r"|go\s+ahead\s+and)(?:\s*,\s*|\s+))+",
    re.I,
)
_SEQUENCE = re.compile(r"\b(?:then|finally|lastly|afterwards?|after\s+that)\b|(?:^|[.!?;]\s+)(?:first|next|second)\s*[,:]", re.I)
_TRAILING = re.compile(r"(?:[\s.,;:!?]|\s(?:and|or|&)(?!\w))+$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])")
_CLAUSE_JOIN = re.compile(r",\s*(?:(?:and|&)\s+)?|\s+(?:and|&)\s+", re.I)
_INTRO = re.compile(
    r"\s+(?P<kw>with|including|featuring|having|containing|covering|supporting|consisting\s+of"
    r"|such\s+as|(?:that|which)\s+(?:has|have|includes?|supports?|contains?))\s+|(?<=\S):\s+",
    re.I,
)
_CONJ = re.compile(r"\s+(?:and|or|&|plus)\s+", re.I)
_LEADING_CONJ = re.compile(r"^(?:and/or|and|or|&|plus|as\s+well\s+as)\s+", re.I)
_ETC = re.compile(r"^(?:etc\.?|and\s+so\s+on|and\s+more|\.\.\.|…)$", re.I)
_PLUS_CHAIN = re.compile(r"(?<![\w+#.])[A-Za-z][\w.#-]*(?:\+\+)?(?:[ \t]*\+[ \t]*[A-Za-z][\w.#-]*(?:\+\+)?)+(?![\w+])")
_PLUS_TOKEN = re.compile(r"[A-Za-z][\w.#-]*(?:\+\+)?")
_INLINE = (re.compile(r"(?<![\w.(])(?:\((\d{1,2})\)|(\d{1,2})[.)])\s+(?=\S)"), re.compile(r"(?<![\w.(])\(?([a-z])\)\s+(?=\S)"))
_PREPOSITION = re.compile(r"\s(for|to|into|in|on|of|from|at|by|about|via|against|across|within)(?=\s)", re.I)
_WORD = re.compile(r"[^\W_][\w'’-]*")
_LAST_WORD = re.compile(r"([^\W_][\w'’-]*)\s*$")
_SPACES = re.compile(r"\s+")

_Found = tuple[str | None, list[str]]  # (goal, items)


def split_request(request: str, max_tasks: int) -> Plan:
    """Split a request into 1..max_tasks subtasks and their shared goal. Deterministic, and
    never drops text. ValueError for an empty request or max_tasks < 1, TypeError for the
    wrong types."""
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
    goal, parts = _plan(text, mask) or (None, [])
    goal, parts = _clean(goal or "") or None, _dedupe(parts)
    if len(parts) < 2 and (goal or not parts):  # one task: the request itself, as written
        return Plan([_squash(text, mask)[0]])
    return Plan([_capitalise(t) for t in merge_adjacent(parts, max_tasks)], goal and _capitalise(goal))


def is_compound(task: str) -> bool:
    """True when the task splits into 2 or more parts (the simulated worker then recurses)."""
    return isinstance(task, str) and bool(task.strip()) and len(split_request(task, sys.maxsize).tasks) >= 2


def merge_adjacent(tasks: list[str], max_tasks: int) -> list[str]:
    """At most ``max_tasks`` subtasks: adjacent ones joined with "; ", earlier groups one larger."""
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(f"max_tasks must be an int of at least 1, got {max_tasks!r}")
    if len(tasks) <= max_tasks:
        return list(tasks)
    size, extra = divmod(len(tasks), max_tasks)
    merged, pos = [], 0
    for group in range(max_tasks):
        count = size + (1 if group < extra else 0)
        merged.append("; ".join(tasks[pos : pos + count]))
        pos += count
    return merged


# -- text helpers ----------------------------------------------------------------
def _mask(text: str) -> str:
    """``text`` with code, quotes, brackets (3 deep), paths and digit commas hidden; same length."""
    mask = _MASKED.sub(lambda m: _HIDDEN * len(m.group()), text)
    for _ in range(3):
        mask, count = _BRACKETS.subn(lambda m: _HIDDEN * len(m.group()), mask)
        if not count:
            break
    return mask


def _squash(text: str, mask: str) -> tuple[str, str]:
    """Collapse visible whitespace runs to one space in text and mask alike, and strip both."""
    out, mout, last = [], [], 0
    for m in _SPACES.finditer(mask):
        out += [text[last : m.start()], " "]
        mout += [mask[last : m.start()], " "]
        last = m.end()
    t, mk = "".join(out) + text[last:], "".join(mout) + mask[last:]
    lead, end = len(t) - len(t.lstrip(" ")), len(t.rstrip(" "))
    return t[lead:end], mk[lead:end]


def _strip_lead(text: str) -> str:
    """Without leading politeness ("Please", "Can you")."""
    return text[m.end() :] if (m := _POLITE.match(text)) else text


def _clean(text: str) -> str:
    """An item as a task: whitespace squashed, no leading "Please", no trailing punctuation."""
    return _TRAILING.sub("", _strip_lead(_squash(text, _mask(text))[0])).strip()


def _words(text: str, pos: int, count: int) -> list[str]:
    """Up to ``count`` lowercased words from pos, with only spaces or commas between."""
    out: list[str] = []
    for m in _WORD.finditer(text, pos, pos + 100):
        if text[pos : m.start()].strip(" ,") or len(out) == count:
            break
        out.append(m.group().lower())
        pos = m.end()
    return out


def _is_task_led(text: str) -> bool:
    """Text reads as an instruction: it starts (after "Please"...) with a task verb used as one."""
    words = _words(_strip_lead(text[:300].lstrip()), 0, 3) + ["", ""]
    if words[0] not in _VERBS or (words[0], words[1]) == ("make", "sure") or words[1] in _AUX:
        return False
    return not (words[2] in _AUX and words[1] not in _DETERMINERS)


def _capitalise(text: str) -> str:
    """Uppercase the first letter unless the first word looks like an identifier (iOS, foo_bar, app.py)."""
    m = _WORD.match(text)
    if not m or "_" in m.group() or any(c.isupper() for c in m.group()[1:]):
        return text
    if (m.end() < len(text) and text[m.end()] in "./\\(@_") or len(m.group()[0].upper()) != 1:
        return text
    return m.group()[0].upper() + text[1:]


def _join(*pieces: str) -> str:
    """Sentences joined in order, with a full stop added where one is missing."""
    out = ""
    for piece in filter(None, (p.strip() for p in pieces)):
        out = f"{out}{'' if not out or out[-1] in '.!?:;' else '.'} {piece}".strip()
    return out


def _dedupe(items: list[str]) -> list[str]:
    """Cleaned, without empty items and repeats (ignoring case), keeping the first."""
    first: dict[str, str] = {}
    for item in filter(None, map(_clean, items)):
        first.setdefault(item.casefold(), item)
    return list(first.values())


# -- planning: each step returns (goal, raw items), or None for "one task" ------------
def _plan(text: str, mask: str) -> _Found | None:
    """Lines (lists, one task per line) first, else the request as one paragraph."""
    if "\n" in mask.strip():
        found = _plan_lines(text, mask)
        if found:
            return found
    text, mask = _squash(text, mask)
    marker = _MARKER.match(text)
    if marker:  # "1. a 2. b 3. c", or a single bullet
        return _inline_list(text, mask) or _plan_paragraph(text[marker.end() :], mask[marker.end() :])
    return _plan_paragraph(text, mask)


def _heading(line: str) -> str | None:
    """The text of a heading line ("# Title", or a line ending with ":"), else None."""
    if line.startswith("#") or (line.endswith(":") and not line.startswith("```")):
        return _clean(line.lstrip("#"))
    return None


@dataclass
class _Item:
    """A list item being read: its text, its section heading and its indented sub-items."""

    text: str
    section: str | None
    kids: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        """A continuation line: of the last sub-item, if any."""
        if self.kids:
            self.kids[-1] += " " + line
        else:
            self.text += " " + line

    def folded(self) -> str:
        """ "Section: parent: a, b, and c", which plans back into a, b and c for its worker."""
        text, kids = self.text.rstrip(), self.kids
        if len(kids) == 1 or any("," in k or ";" in k for k in map(_mask, kids)):
            text += ("" if text.endswith(":") else ":") + " " + "; ".join(kids)
        elif kids:
            text += (
                ("" if text.endswith(":") else ":")
                + " "
                + ", ".join(kids[:-1])
                + (", and " if len(kids) > 2 else " and ")
                + kids[-1]
            )
        return f"{self.section}: {text}" if self.section else text


def _plan_lines(text: str, mask: str) -> _Found | None:
    """Marker lists, or one task per line; None when the lines are one paragraph."""
    lines, pos = [], 0
    for mline in mask.split("\n"):
        lines.append(text[pos : pos + len(mline)])
        pos += len(mline) + 1
    listed = any(_MARKER.match(line) for line in lines)
    if not listed and _SEQUENCE.search(mask):
        return None  # "Do X.\nThen Y": a sequence, done in order by one worker
    preamble: list[str] = []
    trailer: list[str] = []
    items: list[_Item] = []
    section: str | None = None
    base, blank, prev = -1, False, ""
    for line in lines:
        s, indented = line.strip(), line[:1].isspace()
        if not s:
            blank = bool(items)
            continue
        marker = _MARKER.match(line) if listed else None
        if marker:
            indent = len(marker.group(1).expandtabs(4))
            base = indent if base < 0 else base
            if items and indent >= base + 2:
                items[-1].kids.append(line[marker.end() :].strip())
            else:
                items.append(_Item(line[marker.end() :].strip(), section))
        elif _heading(s) is not None and (not items or not indented):
            if items:
                section = _heading(s)
            else:
                preamble.append(s)
        elif listed and not items:
            preamble.append(s)
        elif listed and blank and not indented:
            trailer.append(s)
        elif items and (listed or (not blank and _continues(prev, s))):
            items[-1].add(s)
        else:
            items.append(_Item(s, section))
        prev, blank = s, False
    if section is not None and preamble and _heading(preamble[-1]):  # "## Backend" opening the first section
        first = _heading(preamble.pop())
        for item in items:
            item.section = first if item.section is None else item.section
    if not items:
        return None
    if not listed and not preamble and section is None and _is_task_led(items[0].text):
        for n in range(len(items) - 1, 0, -1):  # prose about an instruction stays with it ("Use Django.")
            if _is_prose(items[n]):
                items[n - 1].text = _join(items[n - 1].text, items.pop(n).text)
    goal = _join(*(_heading(p) or p for p in preamble + trailer))
    tasks = [item.folded() for item in items]
    if len(tasks) == 1:  # a single bullet, or an instruction with prose: planned as a paragraph
        single = f"{goal}: {tasks[0]}" if goal else tasks[0]
        return _plan_paragraph(*_squash(single, _mask(single))) if listed else None
    return goal or None, tasks


def _continues(prev: str, line: str) -> bool:
    """Line is a hard-wrapped continuation of prev."""
    if line.startswith("```") or prev.endswith((",", "-")):
        return True
    if prev.split()[-1].lower() in _CONNECT_END or line.split()[0].lower() in _CONNECT_START:
        return True
    if not line[:1].islower() or prev[-1] in ".!?:;":
        return False
    return len(prev) >= 60 or (_is_task_led(prev) and not _is_task_led(line))


def _is_prose(item: _Item) -> bool:
    """A line about the instruction before it ("It should use React.") rather than a task."""
    words = _words(_strip_lead(item.text), 0, 1) or [""]
    return (item.text.endswith((".", "!", "?")) or words[0] in _CONTEXT_WORDS) and not _is_task_led(item.text)


def _plan_paragraph(text: str, mask: str) -> _Found | None:
    """One paragraph (whitespace squashed): semicolon and inline lists, else one sentence's enumeration."""
    if _SEQUENCE.search(mask):
        return None
    found = _inline_list(text, mask) or _semicolons(text, mask)
    if found:
        return found
    cuts = [0, *(m.end() for m in _SENTENCE.finditer(mask)), len(text)]
    spans = [(a, b) for a, b in zip(cuts, cuts[1:]) if text[a:b].strip()]
    led = [s for s in spans if _is_task_led(text[s[0] : s[1]])]
    if len(led) > 1:
        return None  # two instructions in a row: a sequence
    a, b = (led or spans)[0]
    b = a + len(_TRAILING.sub("", text[a:b]))
    found = None
    for finder in (_verb_clauses, _introduced_list, _plus_chain, _shared_verb):
        found = finder(text[a:b], mask[a:b])
        if found and len({i.casefold() for i in _dedupe(found[1])}) >= 2:
            break
    else:
        return None
    goal, items = found
    before, after = text[:a], text[b:].lstrip(" .,;:!?")
    if goal is not None:
        return _join(before, goal, after), items
    return None, [_join(before, item, after) for item in items]


def _inline_list(text: str, mask: str) -> _Found | None:
    """ "Head: 1. x 2. y 3. z" or "(a) x (b) y" in one line; "Add 1) x and 2) y" shares the verb."""
    for regex in _INLINE:
        marks, expect = [], "1" if regex is _INLINE[0] else "a"
        for m in regex.finditer(text):
            if mask[m.start()] != _HIDDEN and next(g for g in m.groups() if g) == expect:
                marks.append(m)
                expect = str(int(expect) + 1) if expect.isdigit() else chr(ord(expect) + 1)
        if len(marks) >= 2:
            head = text[: marks[0].start()].strip()
            items = [text[m.end() : e] for m, e in zip(marks, [m.start() for m in marks[1:]] + [len(text)])]
            if head and not head.endswith(":") and _is_task_led(head):
                return None, [f"{head} {item.strip()}" for item in items]
            return head, items
    return None


def _semicolons(text: str, mask: str) -> _Found | None:
    """ "a; b; c", or "Heading: a; b; c" with a short heading as the goal."""
    cuts = [m.start() for m in re.finditer(";", mask)]
    if not cuts:
        return None
    items = [text[a:b] for a, b in zip([0, *(c + 1 for c in cuts)], [*cuts, len(text)])]
    colon = mask.find(": ", 0, cuts[0])
    rest = mask[colon + 2 :]
    if colon > 0 and len(text[:colon].split()) <= 15 and not re.search(r"[.!?]\s", mask[:colon]) and ": " not in rest:
        return text[:colon], [items[0][colon + 2 :], *items[1:]]
    return None, items


def _verb_clauses(text: str, mask: str) -> _Found | None:
    """ "Fix the bug, add tests and update the docs": split where a task verb follows "," or "and"."""
    if not _is_task_led(text):
        return None
    cuts = []
    for m in _CLAUSE_JOIN.finditer(mask):
        verb, nxt = (_words(text, m.end(), 2) + ["", ""])[:2]
        if mask[m.end() : m.end() + 1] == _HIDDEN or (verb, nxt) == ("make", "sure"):
            continue
        if verb in _VERBS and (verb not in _NOUNISH or nxt in _DETERMINERS):
            prev = _LAST_WORD.search(mask, max(0, m.start() - 60), m.start())
            if not prev or prev.group(1).lower() not in _PREV_BLOCK:
                cuts.append(m)
    clauses = [text[a:b].strip() for a, b in zip([0, *(m.end() for m in cuts)], [*(m.start() for m in cuts), len(text)])]
    return (None, clauses) if cuts and all(len(c.split()) >= 2 for c in clauses) else None


def _introduced_list(text: str, mask: str) -> _Found | None:
    """ "Build X with A, B, and C": items A, B, C with the goal "Build X"."""
    cands = list(_INTRO.finditer(mask))
    commas = [m.start() for m in re.finditer(",", mask)]
    for n, cand in enumerate(cands):
        if not _WORD.search(text, 0, cand.start()):
            continue
        if (cand.group("kw") or "").lower() == "with" and (_words(_strip_lead(text), 0, 1) or [""])[0] in _WITH_VERBS:
            continue
        after = commas[bisect_right(commas, cand.end()) :]
        if n + 1 < len(cands) and cands[n + 1].start() < (after or [len(mask)])[0]:
            continue  # the first item has its own introducer: use that one
        items = _list_items(text, mask, cand.end(), after)
        return (text[: cand.start()], items) if len(items) >= 2 else None
    return None


def _list_items(text: str, mask: str, start: int, commas: list[int]) -> list[str]:
    """Items of "A, B, and C" / "A, B or C" / "A & B" from start. An item with its own
    introducer keeps the items up to the next one holding "and"/"or" ("backend with auth,
    orders and payments"), when an outer item still follows."""
    items: list[tuple[str, str]] = []
    oxford = False
    for n, (a, b) in enumerate(zip([start, *(c + 1 for c in commas)], [*commas, len(text)])):
        seg, m = text[a:b].strip(), mask[a:b].strip()
        conj = _LEADING_CONJ.match(seg) if n else None
        if conj:
            seg, m, oxford = seg[conj.end() :], m[conj.end() :], b == len(text)
        if seg and items and _ETC.match(seg):
            items[-1] = (f"{items[-1][0]}, {seg}", f"{items[-1][1]}, {seg}")
        elif seg:
            items.append((seg, m))
    last = list(_CONJ.finditer(items[-1][1])) if items and not oxford else []
    if last:
        (seg, m), k = items.pop(), last[-1]
        items += [(seg[: k.start()], m[: k.start()]), (seg[k.end() :], m[k.end() :])]
    conj_at = [k for k, (_, m) in enumerate(items) if _CONJ.search(m)] + [len(items)]
    out: list[str] = []
    i = 0
    while i < len(items):
        j = conj_at[bisect_right(conj_at, i)]  # the next item holding "and"/"or"
        if j < len(items) - 1 and _INTRO.search(items[i][1]):
            out.append(", ".join(s for s, _ in items[i : j + 1]))
            i = j + 1
        else:
            out.append(items[i][0])
            i += 1
    return out


def _plus_chain(text: str, mask: str) -> _Found | None:
    """ "Create a React + FastAPI + PostgreSQL app": one item per name, the sentence as goal."""
    for m in _PLUS_CHAIN.finditer(mask):
        tokens = [t.rstrip(".") for t in _PLUS_TOKEN.findall(text[m.start() : m.end()])]
        if all(len(t) > 1 and t.lower() not in {"ctrl", "shift", "alt", "cmd", "meta"} for t in tokens):
            return text, tokens
    return None


def _shared_verb(text: str, mask: str) -> _Found | None:
    """ "Write tests for a.py, b.py, and c.py": the head (to the first item's last preposition,
    else the verb) goes before each of 3+ short objects. Not for "with"-verbs acting on the
    list as a whole ("Compare A, B, and C"), nor adjective lists ("a fast, reliable, and
    secure API", "Make it fast, secure, and accessible")."""
    verb = _WORD.match(text, len(text) - len(_strip_lead(text)))
    commas = [m.start() for m in re.finditer(",", mask)]
    if not _is_task_led(text) or not verb or verb.group().lower() in _WITH_VERBS or not commas:
        return None
    items = _list_items(text, mask, 0, commas)
    preps = list(_PREPOSITION.finditer(mask, verb.end(), commas[0]))
    head_end = preps[-1].end(1) if preps else verb.end()
    head, first, rest = text[:head_end].strip(), text[head_end : commas[0]].strip(), items[1:]
    if len(items) < 3 or not first or any(len(i.split()) > 5 or _is_task_led(i) for i in rest):
        return None
    if re.search(r"\b(?:that|which|who)\b", mask[: commas[0]], re.I):
        return None  # "a script that downloads X, parses it, and saves Y": the clause's list
    cores = [len(x.split()) - (x.split()[0].lower() in _DETERMINERS) for x in [first, *rest]]
    if (all(c == 1 for c in cores[:-1]) and cores[-1] >= 2) or (all(c <= 1 for c in cores[1:]) and cores[0] > 1):
        return None
    return None, [f"{head} {x}" for x in [first, *rest]]
