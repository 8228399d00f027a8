#!/usr/bin/env bash
# benches/push.sh: sealpush deploy over loopback SFTP against scp and rsync (issue 5).
#
#   1gib   push of a 1 GiB random file packed as an artifact: sealpush's upload (the receipt's
#          upload_secs: until the last upload returned; read-back that runs on after it is
#          verify_secs) and its whole deploy, against `scp` and
#          `rsync` of the same file: MB/s, client and server CPU seconds.
#   large  whole deploy (upload, read-back verify, promote, prove) of the `large` corpus's
#          artifact against `scp` of the archive alone: seconds and ratio (target <= 2.2x).
#   small  deploy of the `small` corpus (100,000 files) against `scp -r` and `rsync -a` of the
#          same tree: files/s, three ways: the default (read-back overlapped with the upload),
#          --sync, and --verify host-sha256sum, whose materialise is the upload alone (what
#          scp -r and rsync -a do; the ratio against rsync is printed).
#
# Runs are alternated (scp, rsync, sealpush, scp, ...) and medians are printed. Release build
# only; the sshd is private (a temp dir, a free port, strict known_hosts), as in
# ../shared/sftp-notes.md. Client CPU is user+sys of the command and its children (ssh); server
# CPU is the delta of the sshd listener's cutime+cstime (its per-connection children).
#
# Every timed command starts after a `sync` (untimed), so none pays for the writeback of the
# previous one's data. Memory: with the page cache full (here after a 32 GB /tmp had been read),
# the kernel reclaims pages while the host side fills its tmpfs, and every tool slowed down,
# sealpush's upload most (2.9-4.4 s for 1 GiB against 1.5-1.9 s). Run
# `sync; echo 3 > /proc/sys/vm/drop_caches` first on a box that has been busy.
#
# The untimed preflight hashes the archive; the deploy does not hash it again when it kept the
# stamp preflight recorded (store-layout.md, "The archive's stamp"), which needs the archive to
# have been written 2 s or more before the preflight, as an artifact packed ahead of its deploy
# is: `pack` below waits those 2 s. Each 1gib run's line shows the receipt's archive_check
# (`stamp` or `sha256`); ARCHIVE_CHECK=sha256 makes the deploy hash it again (by rewriting the
# archive in place after each preflight, which moves its ctime).
#
# Ciphers: scp and rsync use ssh's default order (chacha20-poly1305 first); sealpush moves the
# AES-GCM ciphers the configuration allows to the front when the CPU has AES instructions.
# SAME_CIPHER=aes128-gcm@openssh.com (or any cipher) writes `Ciphers X` into the client config,
# so all three use that one cipher: the comparison of the tools alone.
#
# usage: benches/push.sh [1gib] [large] [small]      (default: all three)
# env:   SEALPUSH (binary; default $CARGO_TARGET_DIR/release/sealpush), CORPUS (/tmp/corpus,
#        built by ../shared/bench/make-corpus.sh), RUNS (3), RUNS_SMALL (2), KEEP=1 keeps $WORK,
#        REMOTE_DIR (where the "host" writes; default $WORK/remote on /tmp's disk; a tmpfs such
#        as /dev/shm takes the filesystem out of the comparison), SAME_CIPHER and ARCHIVE_CHECK
#        (above).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SEALPUSH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sealpush}
CORPUS=${CORPUS:-/tmp/corpus}
RUNS=${RUNS:-3}
RUNS_SMALL=${RUNS_SMALL:-2}
WHICH=("$@")
[ ${#WHICH[@]} -eq 0 ] && WHICH=(1gib large small)
[ -x "$BIN" ] || { echo "no release binary at $BIN (cargo build --release)" >&2; exit 2; }
for t in scp rsync /usr/sbin/sshd /usr/bin/time python3; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
if [ -e "$CORPUS/.building" ]; then echo "corpus $CORPUS is still being built" >&2; exit 2; fi

WORK=$(mktemp -d /tmp/sealpush-pushbench-XXXXXX)
SSHD_PID=
R=${REMOTE_DIR:+$REMOTE_DIR/sealpush-pushbench-$$}
R=${R:-$WORK/remote}
cleanup() {
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  [ -n "${REMOTE_DIR:-}" ] && rm -rf "$R"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# --- private sshd ----------------------------------------------------------------------------
mkdir -p "$WORK"/{remote,local,state}
. "$ROOT/benches/bench-sshd.sh"
start_bench_sshd "$WORK"

# --- helpers ----------------------------------------------------------------------------------
server_ticks() { awk '{print $16 + $17}' "/proc/$SSHD_PID/stat"; }
TCK=$(getconf CLK_TCK)
# timed CMD...: sets T_WALL, T_CPU (client user+sys), T_SRV (server CPU seconds)
timed() {
  local s0 s1
  s0=$(server_ticks)
  sync
  /usr/bin/time -f '%e %U %S' -o "$WORK/time" "$@" > "$WORK/out" 2> "$WORK/err" || {
    echo "command failed: $*" >&2; cat "$WORK/err" >&2; exit 1; }
  # A connection's CPU reaches the listener's cutime only once sshd has reaped its process:
  # wait until the listener has no children left (up to 5 s).
  for _ in $(seq 50); do pgrep -P "$SSHD_PID" >/dev/null || break; sleep 0.1; done
  s1=$(server_ticks)
  read -r T_WALL tu ts < "$WORK/time"
  T_CPU=$(python3 -c "print(round($tu + $ts, 2))")
  T_SRV=$(python3 -c "print(round(($s1 - $s0) / $TCK, 2))")
}
median() { python3 -c 'import sys, statistics; v=[float(x) for x in sys.argv[1:]]; print(round(statistics.median(v), 3))' "$@"; }
mbs() { python3 -c "print(round($1 / $2 / 1e6, 1))"; }

# pack DIR NAME -> prints the store id
pack() {
  "$BIN" -q pack "$1" --store "$WORK/store" --name "$2" > "$WORK/pack.out"
  sleep 2
  awk '/^id:/ {print $2}' "$WORK/pack.out"
}
# deploy ID TARGET -> runs preflight (untimed) then the timed deploy; receipt JSON in $WORK/out
deploy_timed() {
  local id=$1 target=$2
  shift 2
  rm -rf "$WORK/state"
  "$BIN" -q preflight --host bench --ssh-config "$CFG" --artifact "$id" --store "$WORK/store" \
    --target "$target" --plan-out "$WORK/plan.json" > /dev/null
  if [ "${ARCHIVE_CHECK:-}" = sha256 ]; then
    local a; a=$(awk '/^artifact:/ {print $2}' "$WORK/pack.out")
    python3 -c "import os,sys; p=sys.argv[1]; f=os.open(p, os.O_RDWR); b=os.pread(f,1,0); os.pwrite(f,b,0); os.close(f)" "$a"
  fi
  SEALPUSH_STATE_DIR=$WORK/state timed "$BIN" -q deploy "$WORK/plan.json" --json --ssh-config "$CFG" ${DEPLOY_ARGS:-} "$@"
}
receipt() { python3 -c "import json,sys; print(json.load(open('$WORK/out'))['$1'])"; }
clean_remote() { rm -rf "$R"; mkdir -p "$R"; sync; }

echo "sealpush push benchmarks: $("$BIN" --version), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sshd: OpenSSH $(ssh -V 2>&1 | cut -d' ' -f1), loopback port $PORT; runs alternate; medians"
echo "host side writes to $R ($(stat -f -c %T "$(dirname "$R")")); ciphers: ${SAME_CIPHER:-as each tool orders them by default}"

# --- 1 GiB ------------------------------------------------------------------------------------
if [[ " ${WHICH[*]} " == *" 1gib "* ]]; then
  mkdir -p "$WORK/local/big"
  head -c 1073741824 /dev/urandom > "$WORK/local/big/big.bin"
  SIZE=1073741824
  ID=$(pack "$WORK/local/big" big)
  declare -a scp_t scp_c scp_s rs_t rs_c rs_s up_t dep_t dep_c dep_s
  for i in $(seq "$RUNS"); do
    clean_remote
    timed scp -q -F "$CFG" "$WORK/local/big/big.bin" "bench:$R/scp.bin"
    scp_t+=("$T_WALL"); scp_c+=("$T_CPU"); scp_s+=("$T_SRV")
    timed rsync -e "ssh -F $CFG" "$WORK/local/big/big.bin" "bench:$R/rsync.bin"
    rs_t+=("$T_WALL"); rs_c+=("$T_CPU"); rs_s+=("$T_SRV")
    deploy_timed "$ID" "$R/big"
    up_t+=("$(receipt upload_secs)"); dep_t+=("$T_WALL"); dep_c+=("$T_CPU"); dep_s+=("$T_SRV")
    echo "  run $i: scp ${scp_t[-1]}s | rsync ${rs_t[-1]}s | sealpush upload $(receipt upload_secs)s verify $(receipt verify_secs)s deploy ${dep_t[-1]}s (archive_check $(receipt archive_check))" >&2
  done
  echo "== 1 GiB push (random data)"
  printf '%-34s %8s %10s %12s %12s\n' tool secs MB/s client-cpu server-cpu
  printf '%-34s %8s %10s %12s %12s\n' "scp" "$(median "${scp_t[@]}")" "$(mbs $SIZE "$(median "${scp_t[@]}")")" "$(median "${scp_c[@]}")" "$(median "${scp_s[@]}")"
  printf '%-34s %8s %10s %12s %12s\n' "rsync" "$(median "${rs_t[@]}")" "$(mbs $SIZE "$(median "${rs_t[@]}")")" "$(median "${rs_c[@]}")" "$(median "${rs_s[@]}")"
  printf '%-34s %8s %10s %12s %12s\n' "sealpush upload (materialise)" "$(median "${up_t[@]}")" "$(mbs $SIZE "$(median "${up_t[@]}")")" "-" "-"
  printf '%-34s %8s %10s %12s %12s\n' "sealpush whole deploy" "$(median "${dep_t[@]}")" "$(mbs $SIZE "$(median "${dep_t[@]}")")" "$(median "${dep_c[@]}")" "$(median "${dep_s[@]}")"
  echo "upload/scp ratio (secs): $(python3 -c "print(round($(median "${up_t[@]}") / $(median "${scp_t[@]}"), 2))")"
  rm -rf "$WORK/local/big"
fi

# --- large ------------------------------------------------------------------------------------
if [[ " ${WHICH[*]} " == *" large "* ]]; then
  ID=$(pack "$CORPUS/large" large)
  ARCHIVE=$(awk '/^artifact:/ {print $2}' "$WORK/pack.out")
  declare -a l_scp l_dep l_up l_ver
  for i in $(seq "$RUNS"); do
    clean_remote
    timed scp -q -F "$CFG" "$ARCHIVE" "bench:$R/large.tar.zst"
    l_scp+=("$T_WALL")
    deploy_timed "$ID" "$R/large"
    l_dep+=("$T_WALL"); l_up+=("$(receipt upload_secs)"); l_ver+=("$(receipt verify_secs)")
    echo "  run $i: scp archive ${l_scp[-1]}s | deploy ${l_dep[-1]}s (local check+unpack $(receipt prepare_secs)s, upload ${l_up[-1]}s, verify ${l_ver[-1]}s, total in deploy $(receipt total_secs)s)" >&2
  done
  echo "== large corpus ($(du -sh "$CORPUS/large" | cut -f1), archive $(du -h "$ARCHIVE" | cut -f1))"
  echo "scp of the archive:          $(median "${l_scp[@]}") s"
  echo "sealpush deploy (whole):     $(median "${l_dep[@]}") s  (upload, read-back overlapped, $(median "${l_up[@]}") s; read-back after the last upload $(median "${l_ver[@]}") s)"
  echo "deploy/scp ratio: $(python3 -c "print(round($(median "${l_dep[@]}") / $(median "${l_scp[@]}"), 2))")  (target <= 2.2)"
fi

# --- small ------------------------------------------------------------------------------------
if [[ " ${WHICH[*]} " == *" small "* ]]; then
  ID=$(pack "$CORPUS/small" small)
  FILES=$(find "$CORPUS/small" -type f | wc -l)
  declare -a s_scp s_rs s_dep s_up s_sdep s_sup s_hdep s_hup
  for i in $(seq "$RUNS_SMALL"); do
    clean_remote
    timed scp -q -r -F "$CFG" "$CORPUS/small" "bench:$R/scp-small"
    s_scp+=("$T_WALL")
    timed rsync -a -e "ssh -F $CFG" "$CORPUS/small/" "bench:$R/rsync-small/"
    s_rs+=("$T_WALL")
    deploy_timed "$ID" "$R/small"
    s_dep+=("$T_WALL"); s_up+=("$(receipt upload_secs)")
    rm -rf "$R/small" "$R/.sealpush"
    deploy_timed "$ID" "$R/small" --sync
    s_sdep+=("$T_WALL"); s_sup+=("$(receipt upload_secs)")
    rm -rf "$R/small" "$R/.sealpush"
    deploy_timed "$ID" "$R/small" --verify host-sha256sum
    s_hdep+=("$T_WALL"); s_hup+=("$(receipt upload_secs)")
    echo "  run $i: scp -r ${s_scp[-1]}s | rsync -a ${s_rs[-1]}s | deploy ${s_dep[-1]}s (materialise ${s_up[-1]}s) | deploy --sync ${s_sdep[-1]}s (materialise ${s_sup[-1]}s) | deploy --verify host-sha256sum ${s_hdep[-1]}s (materialise ${s_hup[-1]}s)" >&2
  done
  fps() { python3 -c "print(round($FILES / $1))"; }
  echo "== small corpus ($FILES files)"
  echo "scp -r:                          $(median "${s_scp[@]}") s  $(fps "$(median "${s_scp[@]}")") files/s"
  echo "rsync -a:                        $(median "${s_rs[@]}") s  $(fps "$(median "${s_rs[@]}")") files/s"
  echo "sealpush materialise (+overlapped read-back): $(median "${s_up[@]}") s  $(fps "$(median "${s_up[@]}")") files/s"
  echo "sealpush whole deploy (+verify): $(median "${s_dep[@]}") s  $(fps "$(median "${s_dep[@]}")") files/s"
  echo "with --sync (no per-file fsync, sync -f before and after the promote):"
  echo "sealpush materialise (+overlapped read-back): $(median "${s_sup[@]}") s  $(fps "$(median "${s_sup[@]}")") files/s"
  echo "sealpush whole deploy (+verify): $(median "${s_sdep[@]}") s  $(fps "$(median "${s_sdep[@]}")") files/s"
  echo "with --verify host-sha256sum (the materialise is the upload alone, each file fsynced):"
  echo "sealpush materialise (upload only): $(median "${s_hup[@]}") s  $(fps "$(median "${s_hup[@]}")") files/s"
  echo "sealpush whole deploy (+sha256sum -c on the host): $(median "${s_hdep[@]}") s  $(fps "$(median "${s_hdep[@]}")") files/s"
  echo "materialise (upload only) / rsync -a time: $(python3 -c "print(round($(median "${s_hup[@]}") / $(median "${s_rs[@]}"), 2))")  (target < 1)"
fi
