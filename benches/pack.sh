#!/usr/bin/env bash
# benches/pack.sh [CORPUS_DIR]
#
# Packs the reference corpora (CORPUS_DIR/{large,small}, default /tmp/corpus, built with
# ../shared/bench/make-corpus.sh when missing) with sealpush and with the GNU pipelines, run
# alternately (A B A B ..., warm page cache), and prints per-pair times, the median ratio
# (GNU time / sealpush time: > 1 means sealpush is faster) and the archive sizes:
#
#   tar.zst : sealpush pack DIR --format tar.zst --level 3
#             vs tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - DIR | zstd -3 -T0
#   tar.gz  : sealpush pack DIR --format tar.gz --level 6
#             vs the same tar | gzip -6
#   unpack  : sealpush unpack ID DEST (the stored small tar.zst, by its store id)
#             vs tar -xf ARCHIVE -C DEST (the same archive file)
#
# sealpush's side includes everything `pack` does: hashing every file into the manifest, the
# recipe digest and writing into a fresh store (not fsynced, like the GNU pipeline). Its unpack
# includes the entry checks, the archive's sha256 against meta.json and verifying the
# extracted content against the manifest.
#
# Env: SEALPUSH (binary; default $CARGO_TARGET_DIR/release/sealpush or target/release/sealpush),
#      PAIRS (default 5, minimum 5), WHAT (default "large small"), FORMATS (default "tar.zst tar.gz"),
#      BENCH_TMP (where the scratch directory is made, default /tmp; /dev/shm keeps the
#      archives out of the disk's noise).
set -euo pipefail

CORPUS=${1:-/tmp/corpus}
PAIRS=${PAIRS:-5}
WHAT=${WHAT:-large small}
FORMATS=${FORMATS:-tar.zst tar.gz}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SEALPUSH=${SEALPUSH:-${CARGO_TARGET_DIR:-$HERE/target}/release/sealpush}
[ "$PAIRS" -ge 5 ] || { echo "PAIRS must be >= 5" >&2; exit 2; }
[ -x "$SEALPUSH" ] || { echo "no sealpush binary at $SEALPUSH (cargo build --release)" >&2; exit 2; }

# The corpus: wait for another builder, or build it ourselves under the marker.
MAKE_CORPUS=${MAKE_CORPUS:-$HERE/../../shared/bench/make-corpus.sh}
[ -x "$MAKE_CORPUS" ] || MAKE_CORPUS=/work/shared/bench/make-corpus.sh
while [ -e "$CORPUS/.building" ]; do
  echo "waiting for $CORPUS/.building to disappear" >&2; sleep 10
done
for w in $WHAT; do
  if [ ! -d "$CORPUS/$w" ]; then
    mkdir -p "$CORPUS"; touch "$CORPUS/.building"
    trap 'rm -f "$CORPUS/.building"' EXIT
    "$MAKE_CORPUS" "$CORPUS" "$w" >&2
    rm -f "$CORPUS/.building"; trap - EXIT
  fi
done

# A directory of its own inside BENCH_TMP: the cleanup removes it, never BENCH_TMP itself
# (BENCH_TMP=/dev/shm used to have all of /dev/shm emptied at the end).
TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/pack-bench.XXXXXX")
mkdir -p "$TMP"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
secs() { awk -v n="$1" 'BEGIN {printf "%.3f", n/1e9}'; }

cd "$CORPUS"
echo "sealpush: $SEALPUSH ($("$SEALPUSH" --version))"
echo "machine: $(nproc) cores, $(uname -r)"

for w in $WHAT; do
  for fmt in $FORMATS; do
    case $fmt in
      tar.zst) level=3; gnu_comp="zstd -q -3 -T0" ;;
      tar.gz) level=6; gnu_comp="gzip -6" ;;
    esac
    # Warm-up: one untimed run of each (page cache, binary).
    rm -rf "$TMP/store"; "$SEALPUSH" -q pack "$w" --format "$fmt" --level "$level" --store "$TMP/store" >/dev/null
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$w" | $gnu_comp > "$TMP/gnu.$fmt"
    ratios=(); sp_times=(); gnu_times=()
    for i in $(seq "$PAIRS"); do
      # An untimed `sync` first, as in push.sh: no run pays for the writeback of the one
      # before it (a 2 GiB archive's writeback made whichever ran second up to 30% slower).
      # Each run removes its own last output just before it, not both at the start of the
      # pair: this VM hands memory that stayed free for about two seconds back to its host,
      # and taking it back costs a fault per page. With both removed up front, whichever ran
      # second wrote its 2 GiB into returned memory and took up to twice as long, either way.
      run_sp() { rm -rf "$TMP/store"; sync; t0=$(now); "$SEALPUSH" -q pack "$w" --format "$fmt" --level "$level" --store "$TMP/store" >/dev/null; t1=$(now); }
      run_gnu() { rm -f "$TMP/gnu.$fmt"; sync; t2=$(now); tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$w" | $gnu_comp > "$TMP/gnu.$fmt"; t3=$(now); }
      # Alternate which goes first as well.
      if [ $((i % 2)) = 1 ]; then run_sp; run_gnu; else run_gnu; run_sp; fi
      sp=$((t1 - t0)); gnu=$((t3 - t2))
      sp_times+=("$sp"); gnu_times+=("$gnu")
      ratio=$(awk -v a="$gnu" -v b="$sp" 'BEGIN {printf "%.3f", a/b}')
      ratios+=("$ratio")
      echo "$w $fmt pair $i: sealpush $(secs "$sp")s  gnu $(secs "$gnu")s  gnu/sealpush $ratio"
    done
    sp_size=$(stat -c %s "$TMP"/store/artifacts/*/archive."$fmt")
    gnu_size=$(stat -c %s "$TMP/gnu.$fmt")
    echo "$w $fmt: median sealpush $(secs "$(printf '%s\n' "${sp_times[@]}" | median)")s," \
      "gnu $(secs "$(printf '%s\n' "${gnu_times[@]}" | median)")s," \
      "median ratio gnu/sealpush $(printf '%s\n' "${ratios[@]}" | median)x;" \
      "sizes sealpush $sp_size bytes, gnu $gnu_size bytes"
    if [ "$w" = small ] && [ "$fmt" = tar.zst ]; then
      rm -rf "$TMP/small-store"; cp -r "$TMP/store" "$TMP/small-store"
    fi
  done
done

if [ -d "$TMP/small-store" ]; then
  # sealpush unpacks the stored artifact by its id, as a user would: the archive's sha256 is
  # checked against meta.json and the extracted tree against the manifest. tar reads the same
  # archive file.
  ID=$(basename "$TMP"/small-store/artifacts/*)
  A="$TMP/small-store/artifacts/$ID/archive.tar.zst"
  # Every run extracts into a fresh directory and nothing is deleted until the end: right after
  # a mass deletion ext4's inode allocator skips recently freed inodes at great cost (seen here:
  # 30-50 s instead of 5-8 s for whichever ran first), which would decide the comparison.
  # Except in memory (BENCH_TMP=/dev/shm): there every pair's trees are removed after it, or
  # nine pairs of 1 GiB trees fill a 24 GiB machine and the kernel kills the run.
  in_memory=false
  [ "$(stat -f -c %T "$TMP")" = tmpfs ] && in_memory=true
  "$SEALPUSH" -q unpack "$ID" "$TMP/u0" --store "$TMP/small-store" >/dev/null
  ratios=(); sp_times=(); gnu_times=()
  for i in $(seq "$PAIRS"); do
    mkdir "$TMP/g$i"
    if [ $((i % 2)) = 1 ]; then
      t0=$(now); "$SEALPUSH" -q unpack "$ID" "$TMP/u$i" --store "$TMP/small-store" >/dev/null; t1=$(now)
      t2=$(now); tar -xf "$A" -C "$TMP/g$i"; t3=$(now)
    else
      t2=$(now); tar -xf "$A" -C "$TMP/g$i"; t3=$(now)
      t0=$(now); "$SEALPUSH" -q unpack "$ID" "$TMP/u$i" --store "$TMP/small-store" >/dev/null; t1=$(now)
    fi
    sp=$((t1 - t0)); gnu=$((t3 - t2))
    sp_times+=("$sp"); gnu_times+=("$gnu")
    ratio=$(awk -v a="$gnu" -v b="$sp" 'BEGIN {printf "%.3f", a/b}')
    ratios+=("$ratio")
    echo "small unpack pair $i: sealpush $(secs "$sp")s  tar -xf $(secs "$gnu")s  tar/sealpush $ratio"
    if $in_memory; then rm -rf "$TMP/u$i" "$TMP/g$i"; fi
  done
  echo "small unpack: median sealpush $(secs "$(printf '%s\n' "${sp_times[@]}" | median)")s," \
    "tar -xf $(secs "$(printf '%s\n' "${gnu_times[@]}" | median)")s," \
    "median ratio tar/sealpush $(printf '%s\n' "${ratios[@]}" | median)x"
fi
