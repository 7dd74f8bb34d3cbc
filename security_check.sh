#!/usr/bin/env bash
# Pre-commit security check (the seed's step 4), for real:
#   1. fails when a file that holds local secrets (.env, Redis/redis_config.py) is tracked by git;
#   2. scans every tracked file and everything under generated_tasks/ with detect-secrets;
# prints where each finding is and exits non-zero on any. A line that is a deliberate test value carries
# the comment `pragma: allowlist secret`.
# Usage: ./security_check.sh            (from anywhere; it checks the repository it lives in)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

if [[ -x .venv/bin/detect-secrets ]]; then
  scanner=(.venv/bin/detect-secrets)
elif command -v detect-secrets >/dev/null 2>&1; then
  scanner=(detect-secrets)
else
  echo "security_check: detect-secrets is not installed: run 'make venv' (or pip install detect-secrets==1.5.0)" >&2
  exit 2
fi

findings=0

# 1. Local secret files must never be tracked.
for path in .env Redis/redis_config.py; do
  if git ls-files --error-unmatch -- "$path" >/dev/null 2>&1; then
    echo "FAIL $path is tracked by git: it holds local secrets. Run: git rm --cached $path" >&2
    findings=$((findings + 1))
  fi
done

# 2. Scan tracked files plus generated task folders (generated_tasks/ is git-ignored but gets deployed).
files=()
while IFS= read -r -d '' f; do
  [[ -f "$f" ]] && files+=("$f")
done < <(git ls-files -z; find generated_tasks -type f -print0 2>/dev/null)

if ((${#files[@]} > 0)); then
  report="$(mktemp)"
  trap 'rm -f "$report"' EXIT
  "${scanner[@]}" scan -- "${files[@]}" >"$report"
  count=$(python3 - "$report" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
n = 0
for filename, hits in sorted(results.items()):
    for hit in hits:
        print(f"FAIL {filename}:{hit['line_number']}: {hit['type']}", file=sys.stderr)
        n += 1
print(n)
PY
)
  findings=$((findings + count))
fi

if ((findings > 0)); then
  echo "security_check: $findings finding(s). Remove the secret (use .env or environment variables), or mark a" \
       "deliberate test value with '# pragma: allowlist secret'." >&2
  exit 1
fi
echo "security_check: OK (${#files[@]} files scanned, no secrets, no tracked secret files)"
