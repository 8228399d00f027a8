#!/usr/bin/env bash
# benches/side-by-side.sh [large|small|DIR]   (default: large then small)
#
# Whole-tool comparison of `sealpush hash` with the shell recipe
#   find DIR -type f | sort | xargs sha256sum | sha256sum
# run alternately on the same warm tree, digests checked on every run, median ratio printed by
# the shared script (../shared/bench/side-by-side.sh). Then, if installed, the same
# alternation against `rhash --sha256 -r DIR` (the fastest SHA-256 peer measured here), and
# sealpush's peak RSS from /usr/bin/time -v.
#
#   large / small : the reference corpora, built once in $CORPUS (default /tmp/corpus) with
#                   ../shared/bench/make-corpus.sh if missing (minutes, 2+ GiB).
#   DIR           : any directory.
#
# Env: SHARED (the shared/ directory; default: ../shared beside the repo, or ../../shared from
# a worktree), CORPUS, PAIRS (default 7), RECIPE_LOCALE (default C; sealpush runs in the same
# locale; PAIRS below 5 is refused by the shared script), SEALPUSH (the binary to measure;
# without it the release binary is built first with cargo, into CARGO_TARGET_DIR or target/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -z "${SHARED:-}" ]; then
  for s in "$ROOT/../shared" "$ROOT/../../shared"; do
    if [ -d "$s/bench" ]; then SHARED=$(cd "$s" && pwd); break; fi
  done
fi
[ -n "${SHARED:-}" ] && [ -x "$SHARED/bench/side-by-side.sh" ] \
  || { echo "cannot find shared/bench/side-by-side.sh: set SHARED=/path/to/shared" >&2; exit 2; }
CORPUS=${CORPUS:-/tmp/corpus}
PAIRS=${PAIRS:-7}
export PAIRS
RECIPE_LOCALE=${RECIPE_LOCALE:-C}
export RECIPE_LOCALE

if [ -z "${SEALPUSH:-}" ]; then
  cargo build --release --quiet
  SEALPUSH=${CARGO_TARGET_DIR:-$ROOT/target}/release/sealpush
fi
BIN=$(cd "$(dirname "$SEALPUSH")" && pwd)/$(basename "$SEALPUSH")

corpus() {   # builds $CORPUS/$1 once; another helper may be building it
  local what=$1
  while [ -e "$CORPUS/.building" ]; do
    echo "waiting for $CORPUS/.building (another build of the corpus)" >&2; sleep 10
  done
  if [ ! -d "$CORPUS/$what" ]; then
    mkdir -p "$CORPUS"
    touch "$CORPUS/.building"
    trap 'rm -f "$CORPUS/.building"' EXIT
    "$SHARED/bench/make-corpus.sh" "$CORPUS" "$what" >&2
    rm -f "$CORPUS/.building"
    trap - EXIT
  fi
  echo "$CORPUS/$what"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s%N; }

compare() {
  local dir=$1 parent sub
  dir=$(cd "$dir" && pwd); parent=$(dirname "$dir"); sub=$(basename "$dir")
  echo "== $dir"
  "$SHARED/bench/side-by-side.sh" "env LC_ALL=$RECIPE_LOCALE $BIN hash -q" "$dir"

  if command -v rhash >/dev/null; then
    local ratios=() i t0 t1 t2 ts tr
    (cd "$parent" && rhash --sha256 -r "$sub" >/dev/null && "$BIN" hash -q "$sub" >/dev/null)  # warm-up
    for ((i = 1; i <= PAIRS; i++)); do
      t0=$(now); (cd "$parent" && rhash --sha256 -r "$sub" >/dev/null)
      t1=$(now); (cd "$parent" && LC_ALL=$RECIPE_LOCALE "$BIN" hash -q "$sub" >/dev/null)
      t2=$(now)
      tr=$((t1 - t0)); ts=$((t2 - t1))
      ratios+=("$(awk -v a="$tr" -v b="$ts" 'BEGIN { printf "%.3f", a / b }')")
      awk -v i="$i" -v a="$tr" -v b="$ts" 'BEGIN { printf "pair %d: rhash %.3fs  sealpush %.3fs  ratio %.2fx\n", i, a/1e9, b/1e9, a/b }'
    done
    printf 'median speedup vs rhash --sha256 -r: %.2fx\n' "$(printf '%s\n' "${ratios[@]}" | median)"
  else
    echo "rhash not installed: skipping the rhash comparison"
  fi

  if [ -x /usr/bin/time ]; then
    (cd "$parent" && LC_ALL=$RECIPE_LOCALE /usr/bin/time -v "$BIN" hash -q "$sub" 2>&1 >/dev/null) \
      | awk -F': ' '/Maximum resident set size/ { printf "sealpush peak RSS: %.1f MiB\n", $2 / 1024 }'
  fi
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(large small)
for t in "${targets[@]}"; do
  case $t in
    large|small) compare "$(corpus "$t")" ;;
    *) [ -d "$t" ] || { echo "not a directory: $t" >&2; exit 2; }; compare "$t" ;;
  esac
done
