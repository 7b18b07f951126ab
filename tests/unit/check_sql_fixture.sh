#!/usr/bin/env bash
# Proves that scripts/check-sql.sh can fail: run on a fixture of known
# concatenated queries, it must exit 1 and report exactly the lines the
# fixture marks with a "finding" comment (a missed line or a false alarm is
# a failure), so a scanner that silently finds nothing cannot pass CI.
#
#   tests/unit/check_sql_fixture.sh CHECK_SQL FIXTURE
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 CHECK_SQL FIXTURE" >&2; exit 2; }
check=$1 fixture=$2

set +e
out=$("$check" "$fixture" 2>/dev/null)
rc=$?
set -e
echo "$out"
if [[ $rc -ne 1 ]]; then
  echo "FAIL: check-sql.sh exited $rc on $fixture, expected 1 (findings)" >&2
  exit 1
fi
expected=$(grep -nE '// finding$|/\* finding \*/' "$fixture" | cut -d: -f1 | sort -n)
reported=$(sed -n "s|^$fixture:\([0-9]*\): .*|\1|p" <<<"$out" | sort -n)
if [[ -z $expected ]]; then
  echo "FAIL: $fixture marks no finding" >&2
  exit 1
fi
if [[ $expected != "$reported" ]]; then
  echo "FAIL: reported lines differ from the fixture's markers" >&2
  diff <(echo "$expected") <(echo "$reported") | sed -n 's/^< /  missed: line /p; s/^> /  false alarm: line /p' >&2
  exit 1
fi
echo "check-sql.sh reported the $(wc -l <<<"$expected") marked lines and nothing else"
