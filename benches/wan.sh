#!/usr/bin/env bash
# benches/wan.sh: sealpush over a link with round-trip time, against rsync -a (and scp -r).
#
# Loopback hides round trips; a VPS does not. This script reaches the private sshd through
# tests/support/delay.py, an ssh ProxyCommand that holds every chunk DELAY_MS in each direction
# (round trip 2 x DELAY_MS; bandwidth is not limited), and times on a generated tree of FILES
# small files (40 directories) and 200 symlinks, alternately:
#   rsync -a DIR/ host:...            the whole command (its own connection included)
#   sealpush preflight, deploy, rollback   each command whole (connection included); the
#                                          deploy's upload phase (receipt upload_secs) too
#   scp -r (only with SCP=1: one file after the other, minutes at 20 ms)
# and prints medians. The host side writes to REMOTE_DIR (default /dev/shm).
#
# usage: benches/wan.sh     env: DELAY_MS (10), FILES (2000), RUNS (3), SCP (0), SEALPUSH, REMOTE_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SEALPUSH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sealpush}
DELAY_MS=${DELAY_MS:-10}
FILES=${FILES:-2000}
RUNS=${RUNS:-3}
[ -x "$BIN" ] || { echo "no release binary at $BIN (cargo build --release)" >&2; exit 2; }
for t in rsync scp /usr/sbin/sshd python3; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/sealpush-wanbench-XXXXXX)
R=${REMOTE_DIR:-/dev/shm}/sealpush-wanbench-$$
SSHD_PID=
cleanup() {
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$WORK" "$R"
}
trap cleanup EXIT
. "$ROOT/benches/bench-sshd.sh"
start_bench_sshd "$WORK"
FAR=$WORK/client/far
# The interpreter itself, not a version manager's shim (pyenv's adds about 0.3 s to every
# connection, which every sealpush and rsync figure would include).
PY=$(python3 -c 'import sys; print(sys.executable)')
sed "s|^Host bench|Host bench\n  ProxyCommand $PY $ROOT/tests/support/delay.py 127.0.0.1 $PORT $DELAY_MS|" "$CFG" > "$FAR"

# The tree: FILES files of 100 B-20 KiB in 40 directories, 200 relative symlinks.
python3 - "$WORK/tree" "$FILES" <<'PY'
import os, random, sys
root, files = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(files):
    d = f"{root}/pkg{i % 40:02}/sub{i % 5}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:05}.py", "wb") as f:
        f.write(rnd.randbytes(rnd.randint(100, 20000)))
os.makedirs(f"{root}/bin")
for i in range(200):
    os.symlink(f"../pkg{i % 40:02}/sub{i % 5}/f{i:05}.py", f"{root}/bin/t{i}")
PY
"$BIN" -q pack "$WORK/tree" --store "$WORK/store" --name wan > /dev/null
median() { python3 -c 'import sys, statistics; print(round(statistics.median(float(x) for x in sys.argv[1:]), 2))' "$@"; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }; t1=$(date +%s.%N); python3 -c "print(round($t1 - $t0, 3))"; }

echo "sealpush over a $((2 * DELAY_MS)) ms round trip: $("$BIN" --version), $FILES files + 200 symlinks ($(du -sh "$WORK/tree" | cut -f1)), $RUNS runs, medians"
echo "ssh true through the proxy: $(secs ssh -F "$FAR" bench true) s"
rs=(); sc=(); pf=(); dp=(); up=(); rb=()
for i in $(seq "$RUNS"); do
  rm -rf "$R"; mkdir -p "$R"
  rs+=("$(secs rsync -a -e "ssh -F $FAR" "$WORK/tree/" "bench:$R/rsync/")")
  if [ "${SCP:-0}" = 1 ]; then sc+=("$(secs scp -q -r -F "$FAR" "$WORK/tree" "bench:$R/scp")"); fi
  rm -rf "$WORK/state"
  pf+=("$(secs "$BIN" -q preflight --host bench --ssh-config "$FAR" --artifact wan --store "$WORK/store" --target "$R/t" --plan-out "$WORK/plan.json")")
  dp+=("$(SEALPUSH_STATE_DIR=$WORK/state secs "$BIN" -q deploy "$WORK/plan.json" --json --ssh-config "$FAR")")
  up+=("$(python3 -c "import json; print(round(json.load(open('$WORK/out'))['upload_secs'], 3))")")
  rb+=("$(SEALPUSH_STATE_DIR=$WORK/state secs "$BIN" -q rollback "$WORK/plan.json" --ssh-config "$FAR")")
  echo "  run $i: rsync ${rs[-1]}s$([ ${#sc[@]} -gt 0 ] && echo " | scp -r ${sc[-1]}s") | preflight ${pf[-1]}s deploy ${dp[-1]}s (upload ${up[-1]}s) rollback ${rb[-1]}s" >&2
done
printf '%-38s %8s\n' tool secs
printf '%-38s %8s\n' "rsync -a (whole command)" "$(median "${rs[@]}")"
if [ ${#sc[@]} -gt 0 ]; then printf '%-38s %8s\n' "scp -r (whole command)" "$(median "${sc[@]}")"; fi
printf '%-38s %8s\n' "sealpush preflight" "$(median "${pf[@]}")"
printf '%-38s %8s\n' "sealpush deploy (whole command)" "$(median "${dp[@]}")"
printf '%-38s %8s\n' "  of which upload phase (materialise)" "$(median "${up[@]}")"
printf '%-38s %8s\n' "sealpush rollback" "$(median "${rb[@]}")"
