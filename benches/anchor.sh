#!/usr/bin/env bash
# benches/anchor.sh [CORPUS_DIR] [RUNS]
#
# Anchor hashing over SFTP against the recipe run over ssh exec, on loopback, on the same tree:
#   recipe : ssh HOST 'cd CORPUS && find X -type f | LC_ALL=C sort | xargs sha256sum | sha256sum'
#   sealpush: sealpush preflight --host HOST --anchor CORPUS/X ... (the whole read-only survey:
#            connect, facts, checks, then the anchor's walk + every file read over SFTP + recipe)
# run alternately (a warm-up of each first), digests checked equal, median times and the ratio
# printed. A private sshd on 127.0.0.1 is started for the run (needs root and openssh-server).
# The corpus comes from ../shared/bench/make-corpus.sh (large: 32 x 64 MiB, small: 100,000 files).
#
# Env: SETS (default "large small"), SEALPUSH (the binary to measure; without it the release
# binary is built first with cargo, into CARGO_TARGET_DIR or target/). Needs bc.
#
# Targets (issue 4): no slower than the recipe on `small`; within 2x of it on `large` (sealpush
# moves every byte over the wire, the recipe reads locally on the host).
set -euo pipefail

CORPUS=${1:-/tmp/corpus}
RUNS=${2:-3}
SETS=${SETS:-large small}
HERE=$(cd "$(dirname "$0")/.." && pwd)
export LC_ALL=C

while [ -e "$CORPUS/.building" ]; do echo "waiting for $CORPUS to be built..." >&2; sleep 10; done
for s in $SETS; do [ -d "$CORPUS/$s" ] || { echo "missing $CORPUS/$s (run make-corpus.sh)" >&2; exit 2; }; done

if [ -z "${SEALPUSH:-}" ]; then
  (cd "$HERE" && cargo build --release --quiet)
  SEALPUSH=${CARGO_TARGET_DIR:-$HERE/target}/release/sealpush
fi
BIN=$SEALPUSH

W=$(mktemp -d /tmp/sealpush-anchor-bench.XXXXXX)
SSHD_PID=
cleanup() { [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# --- private sshd ----------------------------------------------------------------------------
. "$HERE/benches/bench-sshd.sh"
start_bench_sshd "$W"

# A small artifact so preflight has something to plan; its target never exists.
"$BIN" -q pack "$HERE/fixtures/iu-cutter-v0.6" --store "$W/store" --name bench-artifact >/dev/null

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

recipe() {  # prints the digest
  ssh -F "$CFG" bench "cd '$CORPUS' && find '$1' -type f | LC_ALL=C sort | xargs sha256sum | sha256sum" | cut -c1-64
}
sealpush_anchor() {  # prints the digest
  local out
  out=$("$BIN" -q preflight --host bench --ssh-config "$CFG" --store "$W/store" \
        --artifact bench-artifact --target "$CORPUS/.sealpush-bench-absent" --anchor "$CORPUS/$1" \
        --op-timeout 300 || true)
  printf '%s\n' "$out" | sed -n 's/^anchor_tree_sha256: //p'
}

printf '%-6s %12s %12s %8s\n' set recipe_s sealpush_s ratio
for s in $SETS; do
  want=$(recipe "$s"); got=$(sealpush_anchor "$s")    # warm-up, and the digests must agree
  [ "$want" = "$got" ] || { echo "DIGEST MISMATCH on $s: recipe $want, sealpush $got" >&2; exit 1; }
  : > "$W/r.$s"; : > "$W/s.$s"
  for _ in $(seq "$RUNS"); do
    t0=$(now); d=$(recipe "$s"); t1=$(now)
    [ "$d" = "$want" ] || { echo "recipe digest changed on $s" >&2; exit 1; }
    echo "$t1 - $t0" | bc -l >> "$W/r.$s"
    t0=$(now); d=$(sealpush_anchor "$s"); t1=$(now)
    [ "$d" = "$want" ] || { echo "sealpush digest differs on $s: $d" >&2; exit 1; }
    echo "$t1 - $t0" | bc -l >> "$W/s.$s"
  done
  r=$(median < "$W/r.$s"); p=$(median < "$W/s.$s")
  printf '%-6s %12.2f %12.2f %7.2fx   (runs: recipe %s; sealpush %s)\n' "$s" "$r" "$p" \
    "$(echo "$p / $r" | bc -l)" "$(paste -sd' ' "$W/r.$s" | xargs printf '%.2f ')" \
    "$(paste -sd' ' "$W/s.$s" | xargs printf '%.2f ')"
done
echo "digest: $want (last set), ratio = sealpush / recipe (lower is better)"
