"""Offline heuristic planner: split a request into subtasks and the goal they share.

Standard library only (the simulated worker imports it at start-up). It reads the shapes people write
and leaves anything else as one subtask: that is the AI planner's job. While it plans, code, quotes,
brackets, paths/URLs and "1,000" commas are one placeholder character each, so nothing in them splits.

Lists (``1.`` ``(a)`` ``-`` ``[ ]`` ``Step 1:`` lines, or "1. a 2. b" in one line) and plain lines give
a task each: text around a list, and one heading over all of it, is the goal; headings of sections
prefix their items ("Backend: REST API"), sub-items fold into their parent, and a wrapped or prose line
("It should use React.") stays with the one before. A paragraph splits at semicolons, else in its one
instruction sentence (other sentences join the goal) at verb clauses ("Fix X and add Y"), after an
introducer ("Build X with A, B and C": goal "Build X"), at a "+" chain ("React + Flask app"), or for a
verb shared by 3+ objects ("Write tests for a.py, b.py, and c.py"). A sequence (then, finally; two
instruction sentences) is one subtask: its steps depend on each other. Parts beyond max_tasks merge
into adjacent "a; b" groups: nothing is lost.

``plan_request`` (the job's planner) first reads a "then"-sequence as a chain of steps, each waiting on
the one before ("Set up the database, then build the API, then write the tests": three tasks). A step
that splits by the rules above is a stage of parallel tasks, and the next step waits on all of them
("Build A, B and C, then deploy": deploy waits on the three). Steps are cut at "then" (", then", "and
then", ". Then", a line starting with it) and, once there is a "then", at ", finally" / "and lastly" /
"; afterwards" / "after that"; only where an instruction follows, and never inside a condition ("If
the tests pass, then deploy" is one task). Marker lists keep their items. Sentences before the first
instruction, and what a stage's parts share, are the goal. More steps than max_tasks are merged into
adjacent "a, then b" tasks. ``split_request`` itself keeps a sequence whole (the simulated worker's
recursion and a child job's merged plan use it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

MAX_TASK_CHARS = 2000
"""Advisory size of a subtask: a longer part is kept whole (cutting would drop work)."""


@dataclass
class Plan:
    """The subtasks of a request, and the goal they are all part of (None: none shared)."""

    tasks: list[str]
    goal: str | None = None
    # Each task's prerequisites, as indexes into ``tasks`` (a chain); None: the tasks are independent.
    depends_on: list[list[int]] | None = None


_VERB_TABLE = """
    add analyse analyze audit automate benchmark* build* bump* call*+ change* check* clean* code* combine+ compare+ compile+
    configure containerize convert create debug define delete deploy design* develop document* draft* enable evaluate execute+
    expand explain export* extend extract fetch* fill*+ fix format* generate harden implement import* improve install
    instrument integrate introduce investigate launch*+ lint* localize make measure merge*+ migrate mock*+ modernize modify
    move* optimise optimize organize package* pair*+ parse* patch* polish* port* prepare profile* prototype* publish rebuild
    redesign refactor release* remove rename render* repair* replace*+ reproduce* research* resolve restructure review* rewrite
    run*+ scaffold secure* set* setup ship* simplify speed* split* start*+ stub*+ summarise summarize support* swap*+ sync*
    test* train* translate tune* update upgrade upload* validate verify wrap*+ write""".split()
"""Words that start an instruction. ``*``: often a noun too ("a build and test pipeline"), so it starts
a clause only before "the", "it"... ``+``: acts on its list as a whole ("Replace X with Y and Z",
"Compare A, B, and C")."""
_VERBS = frozenset(w.strip("*+") for w in _VERB_TABLE)
_NOUNISH = frozenset(w.strip("*+") for w in _VERB_TABLE if "*" in w)
_WITH_VERBS = frozenset(w.strip("*+") for w in _VERB_TABLE if "+" in w)
_DETERMINERS = frozenset(
    "the a an it its them their this that these those all every each any some our my your both new existing unit more missing".split()
)
_AUX = frozenset("is are was were has have had should must will can could would does do did needs".split())

# Linear-time regexes: none can backtrack over a long stretch of text.
_SLOT = 0xF0000  # placeholders are characters of Unicode's supplementary private use areas
_SLOTS = re.compile("[\U000f0000-\U0010fffd]")
_HIDE = re.compile(
    r"(?s)```.*?```|`[^`\n]*`|\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]{1,200}?'(?!\w)|(?<=\d),(?=\d)"
    r"|(?<!\S)(?!and/or\s)[^\s/\\]*[/\\]\S*?(?=[.,;:!?)\]}'\"]*(?:\s|$))"
)
_BRACKETS = re.compile(r"\((?!(?:\d{1,3}|[a-z])\))[^()\[\]{}\n]*\)|\[(?![ xX]\])[^()\[\]{}\n]*\]|\{[^()\[\]{}\n]*\}")
_MARKER = re.compile(
    r"^([ \t]*)(?:(?:[-*+•·▪◦‣–—]|\d{1,3}[.)]|\(\d{1,3}\)|[a-z][.)]|\([a-z]\)"
    r"|(?i:step|task|phase|part)[ \t]*\d{1,3}[ \t]*[:.)-])(?:[ \t]+\[[ xX]\])?|\[[ xX]\])[ \t]+(?=\S)"
)
_INLINE = re.compile(r"(?<![\w.(])\(?(\d{1,2}|[a-z])(?:\)|(?<=\d)\.)\s+(?=\S)")  # 1. 1) (1) a) (a)
_POLITE = re.compile(
    r"(?i)(?:(?:please|kindly|also|and|now|(?:can|could|would|will)\s+you(?:\s+please)?|let'?s|go\s+ahead\s+and"
    r"|i\s+(?:want|need|would\s+like)\s+(?:you\s+)?to|we\s+(?:need|want)\s+to)(?:\s*,\s*|\s+))+"
)
_SEQUENCE = re.compile(r"\b(?:then|finally|lastly|afterwards?|after\s+that)\b|(?:^|[.!?;]\s+)(?:first|next|second)\s*[,:]", re.I)
# A step boundary in a chain: punctuation or "and" before the word, except for a bare "then".
_STEP = re.compile(r"(?i)(\s*[,;.!?:]\s*|\s+)(and\s+)?(then|finally|lastly|afterwards|after\s+that)(?![\w'’-])[,:]?\s*")
_FIRST = re.compile(r"(?i)^(?:first(?:ly)?|first\s+of\s+all|to\s+(?:begin|start)(?:\s+with)?)\s*[,:]?\s+")
_CONDITION = re.compile(r"(?i)^(?:if|when|whenever|once|unless|until|after|before|while|since|as\s+soon\s+as|in\s+case)\b")
_TRAILING = re.compile(r"(?:[\s.,;:!?]|\s(?:and|or|&)(?!\w))+$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])")
_CLAUSE_JOIN = re.compile(r",\s*(?:(?:and|&)\s+)?|\s+(?:and|&)\s+", re.I)
_INTRO = re.compile(
    r"(?i)\s+(?:with|including|featuring|having|containing|covering|supporting|consisting\s+of|such\s+as"
    r"|(?:that|which)\s+(?:has|have|includes?|supports?|contains?))\s+|(?<=\S):\s+"
)
_CONJ = re.compile(r"\s+(?:and|or|&|plus)\s+", re.I)
_LEADING_CONJ = re.compile(r"^(?:and/or|and|or|&|plus|as\s+well\s+as)\s+", re.I)
_ETC = re.compile(r"^(?:etc|so\s+on|more|\.\.\.|…)\.?$", re.I)  # after its "and"
_PLUS_CHAIN = re.compile(r"(?<![\w+#.])[A-Za-z][\w.#-]*(?:\+\+)?(?:[ \t]*\+[ \t]*[A-Za-z][\w.#-]*(?:\+\+)?)+(?![\w+])")
_PLUS_TOKEN = re.compile(r"[A-Za-z][\w.#-]*(?:\+\+)?")
_PREPOSITION = re.compile(r"\s(for|to|into|in|on|of|from|at|by|about|via|against|across|within)(?=\s)", re.I)
_WRAP_END = re.compile(r"(?i)(?:[,&+-]|\b(?:and|or|with|including|plus|to|the|an?|of|for|in|on|from|by|as|at|into|that|which))$")
_WRAP_START = re.compile(r"(?i)(?:[&+]|(?:and|or|with|including|plus)\b)")  # a line going on from the one before
_WORD = re.compile(r"[^\W_][\w'’-]*")

_T = TypeVar("_T")
_Found = tuple[str | None, list[str]]  # what a rule found: (goal, raw items); None when it found nothing


def split_request(request: str, max_tasks: int) -> Plan:
    """Split a request into 1..max_tasks subtasks and their shared goal. Deterministic, and never
    drops text. ValueError for an empty request or max_tasks < 1, TypeError for the wrong types."""
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
        raise TypeError(f"max_tasks must be an int, got {type(max_tasks).__name__}")
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
    if not isinstance(request, str):
        raise TypeError(f"request must be a str, got {type(request).__name__}")
    if not request.strip():
        raise ValueError("request is empty: describe the work to be done")
    text, restore = _protect(request.replace("\r\n", "\n").replace("\r", "\n"))
    found = "\n" in text.strip() and _plan_lines(text, restore) or _plan_paragraph(" ".join(text.split()))
    goal, parts = (_clean(found[0] or "") or None, _dedupe(found[1])) if found else (None, [])
    if len(parts) < 2 and (goal or not parts):  # one task: the request itself, as written
        return Plan([restore(" ".join(text.split()))])
    tasks = [_capitalise(restore(t)) for t in merge_adjacent(parts, max_tasks)]
    return Plan(tasks, goal and _capitalise(restore(goal)))


def plan_request(request: str, max_tasks: int) -> Plan:
    """The job's heuristic plan: a "then"-sequence as a chain of stages (``Plan.depends_on``),
    anything else as ``split_request`` plans it. Same errors as ``split_request``."""
    plan = split_request(request, max_tasks)  # checks the arguments; the plan of a request without a chain
    return _chain(request, max_tasks) or plan


def _chain(request: str, max_tasks: int) -> Plan | None:
    """The request as stages of tasks, each stage waiting on the one before; None when it is no
    "then"-sequence of at least two instructions (or max_tasks is 1)."""
    text, restore = _protect(request.replace("\r\n", "\n").replace("\r", "\n"))
    if max_tasks < 2 or any(_MARKER.match(line) for line in text.split("\n")):
        return None
    flat = " ".join(text.split())
    steps: list[str] = []
    start, then = 0, False
    for m in _STEP.finditer(flat):
        word, tail = m.group(3).lower(), flat[max(start, m.start() - 300) : m.start()].strip()  # bounded: linear
        if word != "then" and not (m.group(1).strip() or m.group(2)):
            continue  # "the finally block", "write it afterwards": no step boundary
        if not tail or not _is_task_led(flat[m.end() :]) or _CONDITION.match(_strip_lead(_SENTENCE.split(tail)[-1])):
            continue  # "If the tests pass, then deploy": the condition's "then"
        steps.append(flat[start : m.start()])
        start, then = m.end(), then or word == "then"
    steps.append(flat[start:])
    if not then:
        return None
    sentences = _SENTENCE.split(_FIRST.sub("", _strip_lead(steps[0].strip())))
    led = next((n for n, sentence in enumerate(sentences) if _is_task_led(_FIRST.sub("", sentence))), None)
    if led is None:
        return None  # no instruction before the first "then"
    context = sentences[:led]
    steps[0] = " ".join([_FIRST.sub("", sentences[led]), *sentences[led + 1 :]])
    steps = [_clean(step) for step in steps]
    if len(steps) > max_tasks:  # adjacent steps are done by one worker, in order
        steps = [", then ".join(group) for group in adjacent_groups(steps, max_tasks)]
    stages = [_stage(step, restore) for step in steps]
    goals = [goal for _, goal in stages if goal]
    quotas = _quotas([len(tasks) for tasks, _ in stages], max_tasks)
    tasks: list[str] = []
    depends_on: list[list[int]] = []
    previous: list[int] = []
    for (parts, _), quota in zip(stages, quotas):
        current = list(range(len(tasks), len(tasks) + quota))
        tasks += merge_adjacent(parts, quota)
        depends_on += [list(previous) for _ in current]
        previous = current
    goal = _join(*(restore(line) for line in context), *goals)
    return Plan(tasks, _capitalise(_TRAILING.sub("", goal)) if goal else None, depends_on)


def _stage(step: str, restore: Callable[[str], str]) -> tuple[list[str], str | None]:
    """One step's parallel tasks (as ``split_request`` splits it) and what they share."""
    text = restore(step)
    plan = split_request(text, sys.maxsize)
    return (plan.tasks, plan.goal) if len(plan.tasks) > 1 else ([_capitalise(text)], None)


def _quotas(sizes: list[int], total: int) -> list[int]:
    """How many tasks each stage gets: one each, then one more in turn, up to its size or ``total``."""
    quotas = [1] * len(sizes)
    spare = total - len(sizes)
    while spare > 0 and any(q < n for q, n in zip(quotas, sizes)):
        for i, size in enumerate(sizes):
            if spare and quotas[i] < size:
                quotas[i] += 1
                spare -= 1
    return quotas


def is_compound(task: str) -> bool:
    """True when the task splits into 2 or more parts (the simulated worker then recurses)."""
    return isinstance(task, str) and bool(task.strip()) and len(split_request(task, sys.maxsize).tasks) >= 2


def merge_adjacent(tasks: list[str], max_tasks: int) -> list[str]:
    """At most ``max_tasks`` subtasks: adjacent ones joined with "; ", earlier groups one larger."""
    return ["; ".join(group) for group in adjacent_groups(tasks, max_tasks)]


def adjacent_groups(items: list[_T], max_tasks: int) -> list[list[_T]]:
    """``items`` in at most ``max_tasks`` runs of adjacent ones, earlier runs one larger."""
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(f"max_tasks must be an int of at least 1, got {max_tasks!r}")
    size, extra = divmod(len(items), max_tasks)
    bounds = [group * size + min(group, extra) for group in range(min(max_tasks, len(items)) + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def _protect(text: str) -> tuple[str, Callable[[str], str]]:
    """``text`` with each code span, quote, bracket (3 deep; not list markers "(1)", "(a)", "[ ]"), path
    and digit comma swapped for one placeholder character, and the function that swaps them back."""
    spans: list[str] = []

    def restore(part: str) -> str:
        return _SLOTS.sub(lambda m: spans[ord(m.group()) - _SLOT], part)

    def hide(m: re.Match[str]) -> str:
        if _SLOT + len(spans) > 0x10FFFD:  # out of placeholders (over 131,000 spans): left visible
            return m.group()
        fence = "```" if m.group().startswith("```") else ""  # left visible: a line can be seen to be code
        spans.append(restore(m.group()[len(fence) :]))
        return fence + chr(_SLOT + len(spans) - 1)

    if _SLOTS.search(text):  # the text holds private use characters itself: planned unprotected
        return text, str
    text = _HIDE.sub(hide, text)
    for _ in range(3):  # brackets in brackets, inside out
        text = _BRACKETS.sub(hide, text)
    return text, restore


def _strip_lead(text: str) -> str:
    """Without leading politeness ("Please", "Can you")."""
    return text[m.end() :] if (m := _POLITE.match(text)) else text


def _clean(text: str) -> str:
    """An item as a task: whitespace squashed, no leading "Please", no trailing punctuation."""
    return _TRAILING.sub("", _strip_lead(" ".join(text.split()))).strip()


def _words(text: str) -> list[str]:
    """The first three words of text, lowercased, padded with ""."""
    return [w.lower() for w in _WORD.findall(text[:100])[:3]] + ["", "", ""]


def _is_task_led(text: str) -> bool:
    """Text reads as an instruction: it starts (after "Please"...) with a task verb used as one."""
    w = _words(_strip_lead(text[:300].lstrip()))
    return w[0] in _VERBS and w[:2] != ["make", "sure"] and w[1] not in _AUX and not (w[2] in _AUX and w[1] not in _DETERMINERS)


def _capitalise(text: str) -> str:
    """Uppercase the first letter unless the first word looks like an identifier (iOS, foo_bar, app.py)."""
    word = m.group() if (m := _WORD.match(text)) else "_"
    identifier = "_" in word or word[1:] != word[1:].lower() or text[len(word) : len(word) + 1] in list("./\\(@")
    return text if identifier or len(word[0].upper()) != 1 else word[0].upper() + text[1:]


def _join(*pieces: str) -> str:
    """Sentences joined in order, with a full stop added where one is missing."""
    kept = [p.strip() for p in pieces if p.strip()]
    return " ".join(p if n == len(kept) - 1 or p[-1] in ".!?:;" else f"{p}." for n, p in enumerate(kept))


def _dedupe(items: list[str]) -> list[str]:
    """Cleaned, without empty items and repeats (ignoring case), keeping the first."""
    first: dict[str, str] = {}
    for item in filter(None, map(_clean, items)):
        first.setdefault(item.casefold(), item)
    return list(first.values())


@dataclass
class _Item:
    """A list item being read: its lines (its text, then its indented sub-items) and section heading."""

    parts: list[str]
    section: str | None

    def task(self, sectioned: bool) -> str:
        """ "Section: parent: a, b and c", which plans back into a, b and c for its worker."""
        text, kids = self.parts[0].rstrip(), self.parts[1:]
        if kids:
            listed = len(kids) == 1 or any("," in k or ";" in k for k in kids)
            text = f"{text.rstrip(':')}: " + ("; ".join(kids) if listed else f"{', '.join(kids[:-1])} and {kids[-1]}")
        return f"{self.section}: {text}" if self.section and sectioned else text


def _plan_lines(text: str, restore: Callable[[str], str]) -> _Found | None:
    """Marker lists, or one task per line; None when the lines are one paragraph. A heading
    over every item is their goal, headings between items prefix theirs ("Backend: REST API")."""
    lines = text.split("\n")
    listed = any(_MARKER.match(line) for line in lines)
    if not listed and _SEQUENCE.search(text):
        return None  # "Do X.\nThen Y": a sequence, done in order by one worker
    context: list[str] = []  # headings, text above the list and a paragraph below it: the goal
    items: list[_Item] = []
    section: str | None = None
    base, blank, prev = 0, False, ""
    for line in lines:
        s, indented, marker = line.strip(), line[:1].isspace(), _MARKER.match(line) if listed else None
        if not s:
            blank = bool(items)
            continue
        if marker:
            indent = len(marker.group(1).expandtabs(4))
            base = base if items else indent
            if indent >= base + 2:
                items[-1].parts.append(line[marker.end() :].strip())
            else:
                items.append(_Item([line[marker.end() :].strip()], section))
        elif (s.startswith("#") or s.endswith(":")) and (not items or not indented):  # a heading
            section = _clean(s.lstrip("#"))
            context.append(section)
        elif listed and (not items or (blank and not indented)):
            context.append(s)
        elif listed or (items and not blank and _wraps(restore(prev), restore(s))):  # goes on from the line before
            items[-1].parts[-1] += f" {s}"
        else:
            items.append(_Item([s], section))
        blank, prev = False, s
    if not items:
        return None
    led = not listed and _is_task_led(items[0].parts[0])
    for n in range(len(items) - 1, 0, -1):  # prose about an instruction stays with it ("It should use React.")
        if led and items[n].parts[0].endswith((".", "!", "?")) and not _is_task_led(items[n].parts[0]):
            items[n - 1].parts[0] = _join(items[n - 1].parts[0], items.pop(n).parts[0])
    sectioned = len(sections := {item.section for item in items}) > 1  # else one heading over all: the goal
    goal = _join(*(line for line in context if not (sectioned and line in sections)))
    tasks = [item.task(sectioned) for item in items]
    if len(tasks) == 1:  # a single bullet, or an instruction with prose: planned as a paragraph
        single = f"{goal}: {tasks[0]}" if goal else tasks[0]
        return _plan_paragraph(" ".join(single.split())) if listed else None
    return goal or None, tasks


def _wraps(prev: str, line: str) -> bool:
    """``line`` goes on from the line before (both as written): a hard wrap, or a code block."""
    if line.startswith("```") or _WRAP_END.search(prev) or _WRAP_START.match(line):
        return True
    if not line[:1].islower() or prev[-1] in ".!?:;":
        return False
    return len(prev) >= 60 or (_is_task_led(prev) and not _is_task_led(line))


def _plan_paragraph(text: str) -> _Found | None:
    """One paragraph (whitespace squashed): inline and semicolon lists, else one sentence's
    enumeration; the sentences around it are context, which joins the goal."""
    if _SEQUENCE.search(text):
        return None
    if found := _inline_list(text):  # "1. a 2. b 3. c"
        return found
    text = text[m.end() :] if (m := _MARKER.match(text)) else text  # a single bullet
    if ";" in text:  # "a; b; c", or "Heading: a; b; c" with a short heading as the goal
        head, colon, rest = text.partition(": ")
        heading = colon and 0 < len(head.split()) <= 15 and not re.search(r"[;.!?]\s", f"{head} ") and ": " not in rest
        return (head, rest.split(";")) if heading else (None, text.split(";"))
    sentences = _SENTENCE.split(text)
    led = [n for n, sentence in enumerate(sentences) if _is_task_led(sentence)]
    if len(led) > 1:
        return None  # two instructions in a row: a sequence
    n = led[0] if led else 0
    for finder in (_verb_clauses, _introduced_list, _plus_chain, _shared_verb):
        found = finder(_TRAILING.sub("", sentences[n]))
        if found and len(_dedupe(found[1])) >= 2:
            return _join(*sentences[:n], found[0] or "", *sentences[n + 1 :]) or None, found[1]
    return None


def _inline_list(text: str) -> _Found | None:
    """ "Head: 1. x 2. y 3. z" or "(a) x (b) y" in one line; "Add 1) x and 2) y" shares the verb."""
    for expect in ("1", "a"):
        marks = []
        for m in _INLINE.finditer(text):
            if m.group(1) == expect:
                marks.append(m)
                expect = str(int(expect) + 1) if expect.isdigit() else chr(ord(expect) + 1)
        if len(marks) >= 2:
            head, ends = text[: marks[0].start()].strip(), [m.start() for m in marks[1:]] + [len(text)]
            items = [text[m.end() : e].strip() for m, e in zip(marks, ends)]
            shared = head and not head.endswith(":") and _is_task_led(head)  # "Add 1) x and 2) y"
            return (None, [f"{head} {item}" for item in items]) if shared else (head, items)
    return None


def _verb_clauses(text: str) -> _Found | None:
    """ "Fix the bug, add tests and update the docs": split where a task verb follows "," or "and"."""
    if not _is_task_led(text):
        return None
    cuts, start = [], 0
    for m in _CLAUSE_JOIN.finditer(text):
        verb, after = _words(text[m.end() : m.end() + 100])[:2]
        before = text[start : m.start()].lower().split() or [""]  # "get, put and delete", "parse, validate and format": a list
        if verb in _VERBS and (verb not in _NOUNISH or after in _DETERMINERS) and (verb, after) != ("make", "sure"):
            cuts += [] if len(before) < 2 or before[-1] in _VERBS else [m]
        start = m.end()
    clauses = [text[a:b].strip() for a, b in zip([0, *(m.end() for m in cuts)], [*(m.start() for m in cuts), len(text)])]
    return (None, clauses) if cuts and all(len(c.split()) >= 2 for c in clauses) else None


def _introduced_list(text: str) -> _Found | None:
    """ "Build X with A, B, and C": items A, B, C with the goal "Build X". Of introducers before
    the list's first comma the last one counts ("Build a blog: backend with a, b and c"), unless
    the items after that comma have introducers of their own: then the first item's is part of
    it too ("Build a shop: a catalog with search, a cart with taxes, and checkout")."""
    whole = _words(_strip_lead(text))[0] in _WITH_VERBS  # "Run the tests with A and B": one task
    cands = [c for c in _INTRO.finditer(text) if c.start() > 0 and not (whole and "with" in c.group().lower())]
    if not cands:
        return None
    comma = text.find(",", cands[0].end())
    before = [c for c in cands if comma < 0 or c.start() < comma]
    cand = before[-1]
    if len(before) > 1 and comma >= 0 and len(before) < len(cands):  # later items have introducers too
        cand = before[-2]
    items = _list_items(text[cand.end() :])
    return (text[: cand.start()], items) if len(items) >= 2 else None


def _list_items(text: str) -> list[str]:
    """Items of "A, B, and C" / "A, B or C" / "A & B". An item with its own introducer keeps the
    items up to the next one holding "and"/"or" ("backend with auth, orders and payments"),
    when an outer item still follows."""
    items: list[str] = []
    segments = [s.strip() for s in text.split(",")]
    for n, seg in enumerate(segments):
        seg = seg[conj.end() :] if n and (conj := _LEADING_CONJ.match(seg)) else seg
        if seg and items and _ETC.match(seg):
            items[-1] += f", {seg}"
        elif seg:
            items.append(seg)
    oxford = len(segments) > 1 and _LEADING_CONJ.match(segments[-1])
    if items and not oxford and (conjs := list(_CONJ.finditer(items[-1]))):
        last = items.pop()
        items += [last[: conjs[-1].start()], last[conjs[-1].end() :]]
    reach = max((k for k, item in enumerate(items[:-1]) if _CONJ.search(item)), default=-1)
    out: list[str] = []
    nested = False
    for k, item in enumerate(items):
        if nested and k <= reach:
            out[-1] += f", {item}"
        else:
            out.append(item)
        nested = (nested and k <= reach or bool(_INTRO.search(item))) and not _CONJ.search(item)
    return out


def _plus_chain(text: str) -> _Found | None:
    """ "Create a React + FastAPI + PostgreSQL app": one item per name, the sentence as goal."""
    for m in _PLUS_CHAIN.finditer(text):
        tokens = [t.rstrip(".") for t in _PLUS_TOKEN.findall(m.group())]
        if all(len(t) > 1 and t.lower() not in {"ctrl", "shift", "alt", "cmd", "meta"} for t in tokens):
            return text, tokens
    return None


def _shared_verb(text: str) -> _Found | None:
    """ "Write tests for a.py, b.py, and c.py": the head (to the last preposition before the first
    comma, else the verb) goes before each of 3+ short objects. Not for whole-list verbs ("Compare
    A, B, and C"), adjectives ("a fast, reliable, and secure API"), or a relative clause's list."""
    verb = _WORD.match(text, len(text) - len(_strip_lead(text)))
    comma = text.find(",")
    if not verb or not _is_task_led(text) or verb.group().lower() in _WITH_VERBS or comma < 0:
        return None
    if re.search(r"\b(?:that|which|who)\b", text[:comma], re.I):
        return None
    preps = list(_PREPOSITION.finditer(text, verb.end(), comma))
    head_end = preps[-1].end(1) if preps else verb.end()
    items = _list_items(text[head_end:])
    if len(items) < 3 or any(len(i.split()) > 5 or _is_task_led(i) for i in items[1:]):
        return None
    cores = [len(x.split()) - (x.split()[0].lower() in _DETERMINERS) for x in items]
    if (all(c == 1 for c in cores[:-1]) and cores[-1] >= 2) or (all(c <= 1 for c in cores[1:]) and cores[0] > 1):
        return None
    return None, [f"{text[:head_end].strip()} {x}" for x in items]
