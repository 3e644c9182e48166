// A small Markdown renderer for the reports (headings, paragraphs, lists, tables,
// fenced code, inline code, bold, italic, links). It builds DOM nodes and sets
// only textContent: raw HTML in a report stays visible text, so a worker's output
// can never become markup. Links open only for http(s) targets; the reports'
// relative links name files in the workspace and are shown as such.
"use strict";

const Markdown = (() => {
  const PUNCT = /[!-/:-@[-`{-~]/;
  const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0" };

  function render(text) {
    const root = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let match;
      if (!line.trim()) {
        i += 1;
      } else if ((match = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line))) {
        i = fence(lines, i, match, root);
      } else if ((match = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line))) {
        const heading = document.createElement("h" + match[1].length);
        heading.append(inline(match[2]));
        root.append(heading);
        i += 1;
      } else if (/^ {0,3}([-*_])( *\1){2,} *$/.test(line)) {
        root.append(document.createElement("hr"));
        i += 1;
      } else if (line.includes("|") && i + 1 < lines.length && isDelimiterRow(lines[i + 1])) {
        i = table(lines, i, root);
      } else if (/^ {0,3}([-*+]|\d{1,9}[.)])\s+/.test(line)) {
        i = list(lines, i, root);
      } else {
        i = paragraph(lines, i, root);
      }
    }
    return root;
  }

  function fence(lines, start, match, root) {
    const marker = match[1];
    const body = [];
    let i = start + 1;
    const closing = new RegExp("^ {0,3}" + marker[0] + "{" + marker.length + ",}\\s*$");
    while (i < lines.length && !closing.test(lines[i])) {
      body.push(lines[i]);
      i += 1;
    }
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = body.join("\n");
    pre.append(code);
    root.append(pre);
    return i + 1;
  }

  function isDelimiterRow(line) {
    const cells = splitRow(line);
    return cells.length > 0 && cells.every((cell) => /^:?-+:?$/.test(cell.trim()));
  }

  // Cells split on pipes that are not escaped (GFM: even inside code spans).
  function splitRow(line) {
    let text = line.trim();
    if (text.startsWith("|")) text = text.slice(1);
    if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
    const cells = [];
    let current = "";
    for (let i = 0; i < text.length; i += 1) {
      if (text[i] === "\\" && text[i + 1] === "|") {
        current += "|";
        i += 1;
      } else if (text[i] === "|") {
        cells.push(current);
        current = "";
      } else {
        current += text[i];
      }
    }
    cells.push(current);
    return cells;
  }

  function table(lines, start, root) {
    const header = splitRow(lines[start]);
    const aligns = splitRow(lines[start + 1]).map((cell) => {
      const c = cell.trim();
      return c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : "";
    });
    const tableEl = document.createElement("table");
    const head = tableEl.createTHead().insertRow();
    header.forEach((cell, n) => addCell(head, "th", cell, aligns[n]));
    const body = tableEl.createTBody();
    let i = start + 2;
    while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
      const row = body.insertRow();
      const cells = splitRow(lines[i]);
      header.forEach((_, n) => addCell(row, "td", cells[n] || "", aligns[n]));
      i += 1;
    }
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.append(tableEl);
    root.append(wrap);
    return i;
  }

  function addCell(row, tag, text, align) {
    const cell = document.createElement(tag);
    if (align) cell.style.textAlign = align;
    cell.append(inline(text.trim()));
    row.append(cell);
  }

  function list(lines, start, root) {
    const ordered = /^ {0,3}\d/.test(lines[start]);
    const listEl = document.createElement(ordered ? "ol" : "ul");
    const item = ordered ? /^ {0,3}\d{1,9}[.)]\s+(.*)$/ : /^ {0,3}[-*+]\s+(.*)$/;
    let i = start;
    let last = null;
    while (i < lines.length && lines[i].trim()) {
      const match = item.exec(lines[i]);
      if (match) {
        last = document.createElement("li");
        last.append(inline(match[1]));
        listEl.append(last);
      } else if (last && /^\s+/.test(lines[i])) {
        last.append(" ", inline(lines[i].trim()));
      } else {
        break;
      }
      i += 1;
    }
    root.append(listEl);
    return i;
  }

  function paragraph(lines, start, root) {
    const parts = [];
    let i = start;
    while (i < lines.length && lines[i].trim() && !/^ {0,3}(#{1,6}\s|`{3,}|~{3,})/.test(lines[i])) {
      if (i > start && /^ {0,3}([-*+]|\d{1,9}[.)])\s+/.test(lines[i])) break;
      parts.push(lines[i].trim());
      i += 1;
    }
    const p = document.createElement("p");
    p.append(inline(parts.join("\n")));
    root.append(p);
    return i;
  }

  // -- inline ------------------------------------------------------------------------
  function inline(text) {
    const out = document.createDocumentFragment();
    let plain = "";
    const flush = () => {
      if (plain) out.append(plain);
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === "\\" && i + 1 < text.length && PUNCT.test(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
      } else if (ch === "`") {
        const run = /^`+/.exec(text.slice(i))[0];
        const end = findRun(text, i + run.length, run.length);
        if (end < 0) {
          plain += run;
          i += run.length;
          continue;
        }
        flush();
        let content = text.slice(i + run.length, end).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(content)) content = content.slice(1, -1);
        const code = document.createElement("code");
        code.textContent = content;
        out.append(code);
        i = end + run.length;
      } else if (ch === "[") {
        const link = parseLink(text, i);
        if (!link) {
          plain += ch;
          i += 1;
          continue;
        }
        flush();
        out.append(linkNode(link.label, link.target));
        i = link.end;
      } else if (ch === "*" && text[i + 1] === "*") {
        const end = text.indexOf("**", i + 2);
        if (end <= i + 2) {
          plain += "**";
          i += 2;
          continue;
        }
        flush();
        const strong = document.createElement("strong");
        strong.append(inline(text.slice(i + 2, end)));
        out.append(strong);
        i = end + 2;
      } else if ((ch === "_" || ch === "*") && (i === 0 || /[\s(]/.test(text[i - 1])) && text[i + 1] && !/\s/.test(text[i + 1])) {
        const end = findEmphasisEnd(text, i + 1, ch);
        if (end < 0) {
          plain += ch;
          i += 1;
          continue;
        }
        flush();
        const em = document.createElement("em");
        em.append(inline(text.slice(i + 1, end)));
        out.append(em);
        i = end + 1;
      } else if (ch === "&") {
        const match = /^&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]{2,8});/i.exec(text.slice(i));
        const decoded = match && decodeEntity(match[1]);
        if (decoded === null || decoded === undefined) {
          plain += ch;
          i += 1;
        } else {
          plain += decoded;
          i += match[0].length;
        }
      } else {
        plain += ch;
        i += 1;
      }
    }
    flush();
    return out;
  }

  function findRun(text, from, length) {
    let i = from;
    while (i < text.length) {
      if (text[i] !== "`") {
        i += 1;
        continue;
      }
      let j = i;
      while (j < text.length && text[j] === "`") j += 1;
      if (j - i === length) return i;
      i = j;
    }
    return -1;
  }

  function findEmphasisEnd(text, from, ch) {
    for (let i = from; i < text.length; i += 1) {
      if (text[i] === "\\") {
        i += 1;
      } else if (text[i] === ch && !/\s/.test(text[i - 1]) && (i + 1 === text.length || /[\s.,;:!?)]/.test(text[i + 1]))) {
        return i;
      }
    }
    return -1;
  }

  // [label](target): the label may hold code spans and escaped brackets.
  function parseLink(text, start) {
    let depth = 0;
    let i = start + 1;
    while (i < text.length) {
      const ch = text[i];
      if (ch === "\\") {
        i += 2;
        continue;
      }
      if (ch === "`") {
        const run = /^`+/.exec(text.slice(i))[0];
        const end = findRun(text, i + run.length, run.length);
        i = end < 0 ? i + run.length : end + run.length;
        continue;
      }
      if (ch === "[") depth += 1;
      if (ch === "]") {
        if (depth === 0) break;
        depth -= 1;
      }
      i += 1;
    }
    if (i >= text.length || text[i + 1] !== "(") return null;
    const close = text.indexOf(")", i + 2);
    if (close < 0) return null;
    return { label: text.slice(start + 1, i), target: text.slice(i + 2, close).trim(), end: close + 1 };
  }

  function linkNode(label, target) {
    let shown = target;
    try {
      shown = decodeURIComponent(target);
    } catch (_) { /* keep it encoded */ }
    if (/^https?:\/\//i.test(target)) {
      const a = document.createElement("a");
      a.href = target;
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      a.append(inline(label));
      return a;
    }
    const span = document.createElement("span");
    span.className = "md-path";
    span.title = shown;
    span.append(inline(label));
    return span;
  }

  function decodeEntity(name) {
    if (name[0] !== "#") return ENTITIES[name.toLowerCase()];
    const code = name[1].toLowerCase() === "x" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : null;
  }

  return { render, inline };
})();
