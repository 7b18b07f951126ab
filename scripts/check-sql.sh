#!/usr/bin/env bash
# Fails when C++ code builds SQL text by concatenation instead of passing
# values as parameters ($1, $2 ... through exec_params), because one
# concatenated event field is an SQL injection (TESTPLAN.md "Security checks").
#
#   scripts/check-sql.sh            scan the product sources (daemon/ db/ queue/
#                                   handlers/ http/ monitoring/), not tests/
#   scripts/check-sql.sh PATH...    scan these files or directories instead
#
# Prints one "file:line: ..." per finding and exits 1 if there is any, 0 if
# none, 2 on a usage error. CI runs it as the ctest test `check_sql`.
#
# What counts as SQL: a string literal, or several adjacent ones (the
# compiler joins them), containing an upper-case SELECT, INSERT, UPDATE,
# DELETE, WHERE, VALUES or SET, as the house style writes SQL. A finding is
#   * such a literal next to `+`, `+=` or `<<`, or given to append() or to a
#     format function (format, vformat, sprintf, snprintf, StrCat, StrAppend):
#     "SELECT ... WHERE id = '" + id, out << "UPDATE ...", fmt::format("... {}", v);
#   * a name initialised with such a literal (const char* kClaim = R"SQL(...)SQL",
#     std::string sql = "SELECT ...") used next to `+`, `+=`, `<<`, or with
#     .append(): the usual way a query is assembled in several statements.
# Joining two literals at compile time ("SELECT a " "FROM t") is not a finding.
#
# Legitimate constant composition (e.g. one of two fixed table names chosen
# by a boolean) is allowed by a marker on the reported line saying why:
#     std::string(kSelect) + kByOwner  // sql-constant: both fixed, no input
# A marker without a reason does not count.
#
# A lexer, not a regular expression over lines: it knows comments, string
# and character literals, raw strings with delimiters and literals spanning
# lines, so a `+` inside SQL text (attempts + 1) or in a comment is not a
# finding. Macros and templates are not expanded; the check is a tripwire for
# the usual mistake, not a proof.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
command -v python3 >/dev/null 2>&1 || { echo "check-sql.sh: python3 is needed" >&2; exit 2; }
if [[ $# -eq 0 ]]; then
  set -- "$root/daemon" "$root/db" "$root/queue" "$root/handlers" "$root/http" "$root/monitoring"
fi
for p in "$@"; do
  if [[ $p == -* ]]; then
    echo "usage: $0 [FILE|DIR]..." >&2
    exit 2
  fi
  [[ -e $p ]] || { echo "check-sql.sh: $p: no such file or directory" >&2; exit 2; }
done

exec python3 - "$@" <<'PYTHON'
import os
import re
import sys

SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|SET)\b")
MARKER = re.compile(r"//\s*sql-constant:\s*\S")
FORMAT_CALLS = {"format", "vformat", "format_to", "sprintf", "snprintf", "StrCat", "StrAppend"}
CONCAT_OPS = {"+", "+=", "<<"}
EXTENSIONS = (".cc", ".h", ".cpp", ".hpp", ".cxx", ".hh")
RAW_STRING = re.compile(r'(?:u8|u|U|L)?R"([^ ()\\\t\n]{0,16})\(')
QUOTE = re.compile(r"(?:u8|u|U|L)?(['\"])")
IDENT = re.compile(r"[A-Za-z_]\w*")
NUMBER = re.compile(r"\.?\d(?:[\w.']|[eEpP][+-])*")
PUNCT3 = ("<<=", ">>=", "...", "->*")
PUNCT2 = ("<<", ">>", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "==", "!=", "<=",
          ">=", "&&", "||", "++", "--", "->", "::", ".*")


class Token:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind = kind  # "str", "chr", "id", "num", "op"
        self.text = text  # for "str": the literal's contents
        self.line = line  # where it starts (1-based)


def lex(src):
    """C++ tokens without comments or preprocessor lines."""
    tokens = []
    i, n, line = 0, len(src), 1
    at_line_start = True
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
            at_line_start = True
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if c == "#" and at_line_start:
            # A preprocessor directive, with its backslash continuations.
            while i < n and src[i] != "\n":
                if src[i] == "\\" and i + 1 < n and src[i + 1] == "\n":
                    line += 1
                    i += 1
                i += 1
            continue
        at_line_start = False
        if src.startswith("//", i):
            while i < n and src[i] != "\n":
                i += 1
            continue
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += src.count("\n", i, end)
            i = end
            continue
        m = RAW_STRING.match(src, i)
        if m:
            close = ")" + m.group(1) + '"'
            end = src.find(close, m.end())
            end = n if end < 0 else end
            tokens.append(Token("str", src[m.end():end], line))
            line += src.count("\n", i, end)
            i = end + len(close)
            i = skip_suffix(src, i)
            continue
        m = QUOTE.match(src, i)
        if m:
            quote = m.group(1)
            j = m.end()
            while j < n and src[j] != quote and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            tokens.append(Token("str" if quote == '"' else "chr", src[m.end():j], line))
            i = skip_suffix(src, j + 1)
            continue
        m = IDENT.match(src, i)
        if m:
            tokens.append(Token("id", m.group(0), line))
            i = m.end()
            continue
        m = NUMBER.match(src, i)
        if m:
            tokens.append(Token("num", m.group(0), line))
            i = m.end()
            continue
        for p in PUNCT3 + PUNCT2:
            if src.startswith(p, i):
                tokens.append(Token("op", p, line))
                i += len(p)
                break
        else:
            tokens.append(Token("op", c, line))
            i += 1
    return tokens


def skip_suffix(src, i):
    """Skips a user-defined literal suffix ("..."sv)."""
    m = IDENT.match(src, i)
    return m.end() if m else i


def chains(tokens):
    """Runs of adjacent string literals: (first index, last index, joined text)."""
    i = 0
    while i < len(tokens):
        if tokens[i].kind != "str":
            i += 1
            continue
        j = i
        while j + 1 < len(tokens) and tokens[j + 1].kind == "str":
            j += 1
        yield i, j, "".join(t.text for t in tokens[i:j + 1])
        i = j + 1


def before(tokens, i, skip=("(",)):
    """The token before index i, looking through `skip` tokens."""
    k = i - 1
    while k >= 0 and tokens[k].kind == "op" and tokens[k].text in skip:
        k -= 1
    return (k, tokens[k]) if k >= 0 else (k, None)


def after(tokens, j, skip=(")",)):
    k = j + 1
    while k < len(tokens) and tokens[k].kind == "op" and tokens[k].text in skip:
        k += 1
    return (k, tokens[k]) if k < len(tokens) else (k, None)


def holder_name(tokens, i):
    """The name a literal starting at index i initialises: `NAME = lit`,
    `NAME{lit}`, `NAME(lit)`; None if it is not an initialiser."""
    if i < 2:
        return None
    sep, name = tokens[i - 1], tokens[i - 2]
    if sep.kind != "op" or sep.text not in ("=", "{", "(") or name.kind != "id":
        return None
    # `f(lit)` is a call, not a declaration, unless a type precedes the name.
    if sep.text == "(" and (i < 3 or tokens[i - 3].kind not in ("id", "op")
                            or tokens[i - 3].text in (".", "->", "::", "(", ",", "=")):
        return None
    return name.text


def findings(path, src):
    tokens = lex(src)
    out = []
    holders = set()
    for i, j, text in chains(tokens):
        if not SQL_WORD.search(text):
            continue
        name = holder_name(tokens, i)
        if name:
            holders.add(name)
        k, prev = before(tokens, i)
        if prev is not None and prev.kind == "op" and prev.text in CONCAT_OPS:
            out.append((prev.line, "SQL text joined with `%s`: pass the value as a parameter" % prev.text))
            continue
        # `(` skipped above: prev is the function whose argument this is.
        if prev is not None and prev.kind == "id" and k < i - 1:
            if prev.text == "append":
                out.append((prev.line, "SQL text appended to: pass the value as a parameter"))
                continue
            if prev.text in FORMAT_CALLS:
                out.append((prev.line, "SQL text used as a %s() pattern: pass the value as a parameter" % prev.text))
                continue
        k, nxt = after(tokens, j)
        if nxt is not None and nxt.kind == "op" and nxt.text in CONCAT_OPS:
            out.append((nxt.line, "SQL text joined with `%s`: pass the value as a parameter" % nxt.text))
    for idx, t in enumerate(tokens):
        if t.kind != "id" or t.text not in holders:
            continue
        if idx + 1 < len(tokens) and tokens[idx + 1].kind == "op" and tokens[idx + 1].text == "(":
            continue  # a call of a function with the same name
        _, prev = before(tokens, idx)
        _, nxt = after(tokens, idx)
        op = None
        if prev is not None and prev.kind == "op" and prev.text in CONCAT_OPS:
            op = prev
        elif nxt is not None and nxt.kind == "op" and nxt.text in CONCAT_OPS:
            op = nxt
        elif (nxt is not None and nxt.text in (".", "->") and idx + 2 < len(tokens)
              and tokens[idx + 2].text == "append"):
            op = tokens[idx + 2]
        if op is not None:
            out.append((op.line, "`%s` holds SQL text and is joined with `%s`: pass the value as a parameter"
                        % (t.text, op.text)))
    return sorted(set(out))


def files(paths):
    for p in paths:
        if os.path.isdir(p):
            for d, subdirs, names in os.walk(p):
                subdirs.sort()
                for name in sorted(names):
                    if name.endswith(EXTENSIONS):
                        yield os.path.join(d, name)
        else:
            yield p


def main(paths):
    bad = 0
    for path in files(paths):
        with open(path, encoding="utf-8", errors="replace") as f:
            src = f.read()
        lines = src.split("\n")
        for line, message in findings(path, src):
            if MARKER.search(lines[line - 1]):
                continue
            print("%s:%d: %s (or mark a constant composition: // sql-constant: <why>)"
                  % (path, line, message))
            bad += 1
    if bad:
        print("check-sql.sh: %d place(s) build SQL by concatenation" % bad, file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv[1:]))
PYTHON
