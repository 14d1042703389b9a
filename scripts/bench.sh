#!/usr/bin/env bash
# Benchmarks kmsfs against the plain backing directory, gocryptfs and a FUSE daemon without
# crypto (libfuse's passthrough_hp example, "limit": what the FUSE transport allows), same
# workloads, same disk, same run. What each workload does exactly: docs/BENCHMARKS.md.
#
#   scripts/bench.sh [--quick] [--backing DIR] [--json FILE] [--only TARGETS] [--tree DIRS]
#                    [--rows all|tree] [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

usage() {
  cat <<TXT
usage: scripts/bench.sh [--quick] [--backing DIR] [--json FILE] [--only TARGETS] [--tree DIRS]
                       [--plaintext-names] [--kmsfs-args ARGS] [--rows all|tree] [--rounds N]
  --quick        small sizes (256 MiB sequential, 10 s random, a 2,000-file tree, 200 hot opens);
                 finishes in under 3 minutes once built
  --backing DIR  put every target's files under DIR (default: target/bench/run)
  --json FILE    also write every number as JSON to FILE
  --only TARGETS run only these of plain,kmsfs,gocryptfs,limit (comma-separated), for quick
                 A/B comparisons of one target; a ratio column needs kmsfs and that target.
                 limit is libfuse's passthrough_hp example (no crypto, data through the
                 daemon), built from the Debian source of the installed libfuse3-dev
  --tree DIRS    untar these directories (comma-separated, absolute) instead of the default
                 tree of every k-th file of /usr/share and /usr/lib; for example
                 /usr/share/doc,/usr/lib/python3,/usr/include (symbolic links and special
                 files are kept as they are)
  --plaintext-names  make the kmsfs directory with plaintext names (default: encrypted, as
                 kmsfs init does), to measure what encrypting names costs
  --kmsfs-args ARGS  more options for every kmsfs mount (one word each, space-separated), for
                 example "--io-uring" or "--threads 1"
  --rows ROWS    all (default) or tree: only the untar, ls -lR and rm -rf rows, each target on
                 one fresh mount per round (no sequential, random or hot-open rows)
  --rounds N     run the selected rows N times (default 1), every target on fresh mounts each
                 round, the order of the targets reversed every other round; with N > 1 the
                 report gives min / median / max, every value, and the ratios of the medians
                 and of the worst values
TXT
}

quick=0
backing=""
json_out=""
only="plain,kmsfs,gocryptfs,limit"
tree_dirs=""
init_args=()
mount_args=()
names_mode=encrypted
rows=all
rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --backing) backing="${2:?--backing needs a directory}"; shift ;;
    --json) json_out="${2:?--json needs a file}"; shift ;;
    --only) only="${2:?--only needs targets}"; shift ;;
    --tree) tree_dirs="${2:?--tree needs directories}"; shift ;;
    --plaintext-names) init_args+=(--plaintext-names); names_mode=plaintext ;;
    --kmsfs-args) read -r -a more <<<"${2:?--kmsfs-args needs options}"; mount_args+=("${more[@]}"); shift ;;
    --rows) rows="${2:?--rows needs all or tree}"; shift ;;
    --rounds) rounds="${2:?--rounds needs a number}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

case "$rows" in
  all | tree) ;;
  *) echo "--rows takes all or tree, not $rows" >&2; exit 2 ;;
esac
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds takes a whole number of 1 or more, not $rounds" >&2; exit 2; }

shopt -s inherit_errexit

if [ "$quick" -eq 1 ]; then
  mode=quick seq_mib=256 rand_mib=128 rand_secs=10 tree_files=2000 hot_opens=200
else
  mode=full seq_mib=1024 rand_mib=512 rand_secs=30 tree_files=20000 hot_opens=1000
fi
# Files larger than this are left out of the tree, so a few huge libraries do not dominate it.
tree_max_file=$((16 * 1024 * 1024))

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
say() { echo "== $*"; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Tools and build

install_tools() {
  local missing=()
  command -v fio >/dev/null 2>&1 || missing+=(fio)
  command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)  # the build (etcd-client)
  if ! command -v gocryptfs >/dev/null 2>&1 \
    && apt-cache show gocryptfs >/dev/null 2>&1; then
    missing+=(gocryptfs)
  fi
  if wanted limit; then
    dpkg -s libfuse3-dev >/dev/null 2>&1 || missing+=(libfuse3-dev)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  [ -e /dev/fuse ] || as_root modprobe fuse || true
  command -v fio >/dev/null 2>&1 || { echo "fio is required" >&2; exit 1; }
  if command -v gocryptfs >/dev/null 2>&1; then have_gocryptfs=1; else have_gocryptfs=0; fi
}

build() {
  say "building kmsfs (release)"
  cargo build --release --quiet
  kmsfs="$repo/target/release/kmsfs"
  # What was built, recorded now: the tree may change while the benchmark runs.
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || commit="$commit+uncommitted"
}

# The no-crypto reference: libfuse's passthrough_hp example, from the Debian source package of
# the libfuse3-dev that is installed (the same libfuse it links with), checked against the
# SHA-256 the package's .dsc names. Built once into target/bench/.
build_limit() {
  limit_bin=""
  local version upstream dir pool="http://deb.debian.org/debian/pool/main/f/fuse3"
  version=$(dpkg-query -W -f='${Version}' libfuse3-dev 2>/dev/null) || {
    say "libfuse3-dev is not installed: the limit column stays empty"; return 0; }
  upstream=${version%-*}
  upstream=${upstream#*:}
  dir="$repo/target/bench/libfuse-$upstream"
  limit_bin="$dir/passthrough_hp"
  [ -x "$limit_bin" ] && return 0
  say "building passthrough_hp from fuse3 $version (once)"
  mkdir -p "$dir"
  local tarball="fuse3_$upstream.orig.tar.xz" dsc="fuse3_${version#*:}.dsc" want
  if ! curl -sSf -o "$dir/$dsc" "$pool/$dsc" || ! curl -sSf -o "$dir/$tarball" "$pool/$tarball"; then
    say "cannot download the fuse3 source from $pool: the limit column stays empty"
    limit_bin=""; return 0
  fi
  want=$(awk -v f="$tarball" '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on && $3 == f { print $1 }' "$dir/$dsc")
  if [ -z "$want" ] || [ "$(sha256sum "$dir/$tarball" | cut -d' ' -f1)" != "$want" ]; then
    echo "the fuse3 source $tarball does not match the SHA-256 in $dsc" >&2
    exit 1
  fi
  tar -C "$dir" -xf "$dir/$tarball"
  local example
  example=$(find "$dir" -path '*/example/passthrough_hp.cc' | head -1)
  # What libfuse's meson build defines for the examples on Linux with glibc. pkg-config's
  # flags are split into words on purpose.
  # shellcheck disable=SC2046
  g++ -std=c++17 -O2 -Wall -DHAVE_UTIMENSAT -DHAVE_POSIX_FALLOCATE -DHAVE_SETXATTR \
    -I"$(dirname "$example")" "$example" \
    $(pkg-config fuse3 --cflags --libs) -lpthread -o "$limit_bin.tmp"
  mv "$limit_bin.tmp" "$limit_bin"
}

# ---------------------------------------------------------------------------------------------
# Mounts: every mount point is recorded, and cleanup unmounts whatever is still mounted.

mounts=()
work=""

# From the mount table, not stat(2): a mount whose daemon died fails every stat.
is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local mnt
  for mnt in "${mounts[@]}"; do
    if is_mounted "$mnt"; then
      echo "== cleanup: unmounting $mnt" >&2
      fusermount3 -u "$mnt" 2>/dev/null || as_root umount -l "$mnt" || true
    fi
  done
  if [ -n "$work" ] && [ -d "$work" ]; then
    for mnt in "${mounts[@]}"; do
      if is_mounted "$mnt"; then
        echo "== cleanup: $mnt is still mounted; leaving $work in place" >&2
        exit "$status"
      fi
    done
    rm -rf "$work" || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() {
  sync
  echo 3 | as_root tee /proc/sys/vm/drop_caches >/dev/null
}

# kmsfs: the daemon's pid comes from the line the mount prints.
kmsfs_pid=""
kmsfs_mount() { # LOG
  local out
  out=$("$kmsfs" mount "$work/kmsfs/cipher" "$work/kmsfs/mnt" \
    --passphrase-file "$work/passphrase" --log "$1" "${mount_args[@]}")
  kmsfs_pid=$(sed -n 's/.*daemon pid \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$kmsfs_pid" ] || kmsfs_pid=$(pgrep -n -f "kmsfs mount $work/kmsfs/cipher" || true)
}
kmsfs_unmount() { "$kmsfs" unmount "$work/kmsfs/mnt" >/dev/null; }

gocryptfs_pid=""
gocryptfs_mount() {
  gocryptfs -q -nosyslog -passfile "$work/passphrase" "$work/gocryptfs/cipher" "$work/gocryptfs/mnt"
  gocryptfs_pid=$(pgrep -n -f -- "gocryptfs.*$work/gocryptfs/cipher" || true)
}
gocryptfs_unmount() { fusermount3 -u "$work/gocryptfs/mnt"; }

# passthrough_hp with its defaults (caches on, writeback cache, multithreaded); it stays in the
# foreground so its pid is ours, and the mount is waited for.
limit_pid=""
limit_mount() {
  "$limit_bin" --foreground "$work/limit/backing" "$work/limit/mnt" >>"$work/limit/log" 2>&1 &
  limit_pid=$!
  local i
  for i in $(seq 100); do
    is_mounted "$work/limit/mnt" && return 0
    kill -0 "$limit_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "passthrough_hp did not mount (log: $work/limit/log)" >&2
  return 1
}
limit_unmount() {
  fusermount3 -u "$work/limit/mnt"
  wait "$limit_pid" 2>/dev/null || true
}

setup_targets() {
  mkdir -p "$work/plain" "$work/kmsfs/mnt" "$work/gocryptfs/mnt" "$work/limit/backing" \
    "$work/limit/mnt"
  (umask 077; head -c 24 /dev/urandom | base64 >"$work/passphrase")
  mounts=("$work/kmsfs/mnt" "$work/gocryptfs/mnt" "$work/limit/mnt")
  "$kmsfs" init "$work/kmsfs/cipher" --keystore "$work/kmsfs/keystore" \
    --passphrase-file "$work/passphrase" "${init_args[@]}" >/dev/null
  if [ "$have_gocryptfs" -eq 1 ]; then
    mkdir -p "$work/gocryptfs/cipher"
    gocryptfs -q -init -passfile "$work/passphrase" "$work/gocryptfs/cipher" >/dev/null
  fi
}

# VmRSS and VmHWM of PID in MiB, as "rss hwm".
rss_of() {
  awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "%.1f %.1f", r / 1024, h / 1024 }' \
    "/proc/$1/status"
}

# ---------------------------------------------------------------------------------------------
# The tree to untar: a deterministic selection of regular files under /usr/share and /usr/lib.

make_tree_tarball() {
  mkdir -p "$repo/target/bench"
  [ -z "$tree_dirs" ] || { make_given_tree; return; }
  tarball="$repo/target/bench/tree-$tree_files.tar"
  local list="$repo/target/bench/tree-$tree_files.list"
  if [ ! -s "$tarball" ]; then
    say "building $tarball (once; reused by later runs)"
    python3 - "$tree_files" "$tree_max_file" "$list" <<'PY'
import os, sys
want, max_size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
files = []
for top in ("usr/share", "usr/lib"):
    for root, dirs, names in os.walk("/" + top):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path) \
                    and st.st_size <= max_size and os.access(path, os.R_OK):
                files.append(path[1:])
files.sort()
# Every k-th file of the sorted list: spread over the whole of /usr/share and /usr/lib.
step = max(1, len(files) // want)
chosen = files[::step][:want]
with open(out, "wb") as f:
    for path in chosen:
        f.write(path.encode() + b"\0")
PY
    tar -C / -cf "$tarball.tmp" --null -T "$list" --owner=0 --group=0 --numeric-owner \
      --mode=u+rw --transform 's,^,tree/,'
    mv "$tarball.tmp" "$tarball"
  fi
  read -r tree_count tree_bytes < <(tar -tvf "$tarball" | awk '$1 ~ /^-/ { n++; s += $3 } END { print n, s }')
  say "tree: $tree_count files, $(awk -v b="$tree_bytes" 'BEGIN { printf "%.0f MB", b / 1e6 }') ($tarball)"
}

# --tree: the given directories as they are (made again every run: they may have changed).
make_given_tree() {
  local d rel=()
  IFS=',' read -r -a dirs <<<"$tree_dirs"
  for d in "${dirs[@]}"; do
    if [ ! -d "$d" ] || [[ "$d" != /* ]]; then
      echo "--tree: $d is not an absolute directory" >&2
      exit 2
    fi
    rel+=("${d#/}")
  done
  tarball="$repo/target/bench/tree-given.tar"
  say "building $tarball from $tree_dirs"
  tar -C / -cf "$tarball.tmp" --owner=0 --group=0 --numeric-owner --mode=u+rw \
    --transform 's,^,tree/,' "${rel[@]}" 2>"$repo/target/bench/tree-given.errors" || {
    echo "--tree: tar failed: $(head -1 "$repo/target/bench/tree-given.errors")" >&2; exit 1; }
  mv "$tarball.tmp" "$tarball"
  read -r tree_count tree_entries tree_bytes < <(tar -tvf "$tarball" \
    | awk '$1 ~ /^[-h]/ { n++ } $1 ~ /^-/ { s += $3 } { e++ } END { print n + 0, e + 0, s + 0 }')
  say "tree: $tree_count files, $tree_entries entries, $(awk -v b="$tree_bytes" 'BEGIN { printf "%.0f MB", b / 1e6 }') ($tree_dirs)"
}

# ---------------------------------------------------------------------------------------------
# Workloads: each takes the directory to work in and prints one number.

fio_json() { # FIELD-EXPRESSION, then fio arguments
  local expr="$1" out
  shift
  if ! out=$(fio --output-format=json "$@"); then
    echo "fio failed: fio $*" >&2
    return 1
  fi
  python3 -c "
import json, sys
job = json.load(sys.stdin)['jobs'][0]
print(round($expr, 1))" <<<"$out"
}

seq_write() { # MB/s, 1 MiB writes, fsync at the end included
  fio_json "job['write']['bw_bytes'] / 1e6" --name=seqwrite --filename="$1/seq.bin" \
    --rw=write --bs=1M --size="${seq_mib}M" --ioengine=psync --iodepth=1 --end_fsync=1
}

seq_read() { # MB/s, 1 MiB reads; the caller makes the caches cold first
  fio_json "job['read']['bw_bytes'] / 1e6" --name=seqread --filename="$1/seq.bin" \
    --rw=read --bs=1M --size="${seq_mib}M" --ioengine=psync --iodepth=1 --invalidate=1
}

rand_layout() { # writes the file the random workloads use; not measured
  fio --output-format=terse --name=layout --filename="$1/rand.bin" --rw=write --bs=1M \
    --size="${rand_mib}M" --ioengine=psync --end_fsync=1 >/dev/null
}

rand_read() { # IOPS
  fio_json "job['read']['iops']" --name=randread --filename="$1/rand.bin" --rw=randread \
    --bs=4k --size="${rand_mib}M" --ioengine=psync --iodepth=1 --time_based \
    --runtime="$rand_secs" --invalidate=1 --randrepeat=1
}

rand_write() { # IOPS, fsync at the end included
  fio_json "job['write']['iops']" --name=randwrite --filename="$1/rand.bin" --rw=randwrite \
    --bs=4k --size="${rand_mib}M" --ioengine=psync --iodepth=1 --time_based \
    --runtime="$rand_secs" --randrepeat=1 --end_fsync=1
}

# The tree workloads time the command alone: sync(2) is machine-wide and would count other
# processes' dirty data. Every file is closed when tar returns, and a FUSE close flushes its
# dirty pages to the daemon.
untar() { # seconds; the tarball itself is read from the page cache
  cat "$tarball" >/dev/null
  local t
  t=$(now)
  tar -xf "$tarball" -C "$1" --no-same-owner 2>"$work/tar-errors" || {
    echo "   untar failed: $(wc -l <"$work/tar-errors") errors, first: $(head -1 "$work/tar-errors")" >&2
    return 1
  }
  local elapsed files
  elapsed=$(since "$t")
  files=$(find "$1/tree" -type f | wc -l)
  [ "$files" -eq "$tree_count" ] || { echo "   untar: $files of $tree_count files" >&2; return 1; }
  echo "$elapsed"
}

list_tree() { # seconds
  local t
  t=$(now)
  ls -lR "$1/tree" >/dev/null || return
  since "$t"
}

remove_tree() { # seconds
  local t
  t=$(now)
  rm -rf "$1/tree" || return
  since "$t"
}

make_hot_file() { head -c 16384 /dev/urandom >"$1/hot.bin"; }

hot_opens() { # microseconds per open/read/close of one 16 KiB file
  python3 - "$1/hot.bin" "$hot_opens" <<'PY'
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
for _ in range(n):
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 65536):
        pass
    os.close(fd)
print(round((time.perf_counter() - start) / n * 1e6, 1))
PY
}

# ---------------------------------------------------------------------------------------------
# One target: the same sequence for each, with mount/unmount hooks for the FUSE ones.
#
#   1. sequential write, random-file layout, hot-file creation       (mount 1)
#   2. caches cold: sequential read; random read; random write;
#      untar; ls -lR; rm -rf (caches dropped before each)            (mount 2), then RSS
#   3. hot loop on a fresh mount; unmount; count KMS calls           (mount 3)

# Keyed TARGET.METRIC.ROUND: with --rounds every round keeps its own value.
declare -A result=()
round=1
record() { result["$1.$2.$round"]="$3"; printf '   %-10s %-12s %s\n' "$1" "$2" "$3"; }
# A failing workload is recorded as "failed" (FAILED in the table, null in the JSON) and the run
# goes on. Workloads run in a command substitution, where set -e does not apply: each one checks
# its own commands.
measure() { # TARGET METRIC WORKLOAD DIR
  local value
  if value=$("$3" "$4"); then
    record "$1" "$2" "$value"
  else
    record "$1" "$2" failed
  fi
}

# The tree rows, the caches dropped before each; what is left of the tree goes (only if rm -rf
# failed), so the next workload or round starts empty.
tree_rows() { # NAME DIR
  local name="$1" dir="$2"
  drop_caches
  measure "$name" untar untar "$dir"
  drop_caches
  measure "$name" ls_lR list_tree "$dir"
  drop_caches
  measure "$name" rm_rf remove_tree "$dir"
  rm -rf "$dir/tree"
}

run_target() { # NAME DIR MOUNT-FN UNMOUNT-FN
  local name="$1" dir="$2" mount_fn="$3" unmount_fn="$4" t
  t=$(now)
  say "$name$round_label"
  $mount_fn 1
  measure "$name" seq_write seq_write "$dir"
  rand_layout "$dir"
  make_hot_file "$dir"
  $unmount_fn 1

  drop_caches
  $mount_fn 2
  measure "$name" seq_read seq_read "$dir"
  drop_caches
  measure "$name" rand_read rand_read "$dir"
  drop_caches
  measure "$name" rand_write rand_write "$dir"
  tree_rows "$name" "$dir"
  rm -f "$dir/seq.bin" "$dir/rand.bin"
  local rss
  rss=$($mount_fn rss)
  [ -z "$rss" ] || { record "$name" rss_mib "${rss% *}"; record "$name" hwm_mib "${rss#* }"; }
  $unmount_fn 2

  drop_caches
  $mount_fn 3
  measure "$name" hot_open hot_opens "$dir"
  $unmount_fn 3
  rm -f "$dir/hot.bin"
  echo "   ($name took $(since "$t") s)"
}

# --rows tree: the tree rows alone, on one fresh mount, caches dropped before each as above;
# then the daemon's memory.
run_tree_target() { # NAME DIR MOUNT-FN UNMOUNT-FN
  local name="$1" dir="$2" mount_fn="$3" unmount_fn="$4" t
  t=$(now)
  say "$name$round_label"
  $mount_fn 2
  tree_rows "$name" "$dir"
  local rss
  rss=$($mount_fn rss)
  [ -z "$rss" ] || { record "$name" rss_mib "${rss% *}"; record "$name" hwm_mib "${rss#* }"; }
  $unmount_fn 2
  echo "   ($name took $(since "$t") s)"
}

# Hooks: "$1" is the phase (1, 2, 3) or "rss".
plain_phase_mount() { :; }
plain_phase_unmount() { :; }

kmsfs_phase_mount() {
  case "$1" in
    rss) rss_of "$kmsfs_pid" ;;
    *) kmsfs_mount "$work/kmsfs/log-r$round-$1" ;;
  esac
}
kmsfs_phase_unmount() {
  kmsfs_unmount
  if [ "$1" = 3 ]; then
    read -r hits misses < <(python3 - "$work/kmsfs/log-r$round-3" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if "DEK cache counters" in l]
if not lines:
    print("? ?")
else:
    hits = re.search(r"hits=(\d+)", lines[-1])
    misses = re.search(r"misses=(\d+)", lines[-1])
    print(hits.group(1) if hits else "?", misses.group(1) if misses else "?")
PY
)
    record kmsfs kms_calls "$misses"
    record kmsfs dek_hits "$hits"
  fi
}

gocryptfs_phase_mount() {
  case "$1" in
    rss) [ -z "$gocryptfs_pid" ] || rss_of "$gocryptfs_pid" ;;
    *) gocryptfs_mount ;;
  esac
}
gocryptfs_phase_unmount() { gocryptfs_unmount; }

limit_phase_mount() {
  case "$1" in
    rss) [ -z "$limit_pid" ] || rss_of "$limit_pid" ;;
    *) limit_mount ;;
  esac
}
limit_phase_unmount() { limit_unmount; }

# ---------------------------------------------------------------------------------------------
# Report

machine() {
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
  cores=$(nproc)
  mem_gib=$(awk '{ printf "%.0f", $2 / 1048576; exit }' /proc/meminfo)
  kernel=$(uname -r)
  backing_fs=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
  # An ext4 without a journal (this VM's root) skips inodes freed in the last 60 s (360 s while
  # their inode-table block is dirty) when it allocates (fs/ext4/ialloc.c, recently_deleted):
  # an untar soon after an `rm -rf` of a similar tree scans past all of them, and the more
  # inodes a target makes, the more it pays.
  backing_journal=-
  local dev
  dev=$(findmnt -n -o SOURCE -T "$work" 2>/dev/null || true)
  if [ "$backing_fs" = ext4 ] && [ -r "/sys/fs/ext4/${dev##*/}/journal_task" ]; then
    if [ "$(cat "/sys/fs/ext4/${dev##*/}/journal_task")" = "<none>" ]; then
      backing_journal=no
    else
      backing_journal=yes
    fi
  fi
  gocryptfs_version=-
  [ "$have_gocryptfs" -eq 0 ] || gocryptfs_version=$(gocryptfs -version | cut -d';' -f1)
}

report() {
  local tsv="$work/results.tsv" key
  for key in "${!result[@]}"; do printf '%s\t%s\n' "$key" "${result[$key]}"; done >"$tsv"
  machine
  python3 - "$tsv" "$json_out" "$work/rounds.tsv" <<PY
import json, sys
tsv, json_out = sys.argv[1:3]
mode = "$mode"
host = {"cpu": "$cpu", "cores": $cores, "mem_gib": $mem_gib, "kernel": "$kernel",
        "backing_fs": "$backing_fs", "backing_journal": "$backing_journal", "backing_dir": "$work", "load_at_start": $load_start,
        "kmsfs_commit": "$commit", "kmsfs_names": "$names_mode", "kmsfs_mount_args": "${mount_args[*]}", "gocryptfs": "$gocryptfs_version", "fio": "$(fio --version)"}
machine = (f"{host['cpu']}, {host['cores']} cores, {host['mem_gib']} GiB RAM, kernel {host['kernel']}, "
           f"backing {host['backing_fs']} ({host['backing_dir']}, journal: {host['backing_journal']}), load average at start {host['load_at_start']}; "
           f"kmsfs {host['kmsfs_commit']} ({host['kmsfs_names']} names{', ' + host['kmsfs_mount_args'] if host['kmsfs_mount_args'] else ''}), {host['gocryptfs']}, {host['fio']}")
import statistics
rounds, rows_mode, rounds_tsv = $rounds, "$rows", sys.argv[3]
# Every value in round order, None where a round has none; a failed one is also in failed_at.
series = {}
failed_at = set()
for line in open(tsv):
    key, value = line.rstrip("\n").split("\t")
    target, rest = key.split(".", 1)
    metric, rnd = rest.rsplit(".", 1)
    cells = series.setdefault((target, metric), [None] * rounds)
    try:
        cells[int(rnd) - 1] = float(value)
    except ValueError:
        failed_at.add((target, metric, int(rnd)))
failed_keys = {f"{t}.{m}" for t, m, _ in failed_at}
if rounds == 1:
    failed = sorted(failed_keys)
else:
    failed = [f"{t}.{m} (round {r})" for t, m, r in sorted(failed_at)]
def spread(cells):
    ok = [v for v in cells or [] if v is not None]
    return (min(ok), statistics.median(ok), max(ok)) if ok else (None, None, None)
# One number per target and metric: the value of the only round, or the median of several.
values = {k: spread(cells)[1] for k, cells in series.items()}
round_info = []
for line in open(rounds_tsv):
    rnd, order, load, steal, secs = line.rstrip("\n").split("\t")
    round_info.append({"round": int(rnd), "order": order.split(), "load_average": load,
                       "steal_pct": float(steal), "seconds": float(secs)})
rows = [
    ("seq_write", "sequential write $seq_mib MiB, bs 1 MiB + fsync", "MB/s", "higher"),
    ("seq_read", "sequential read $seq_mib MiB, bs 1 MiB, cold", "MB/s", "higher"),
    ("rand_read", "random read 4 KiB, ${rand_secs} s, ${rand_mib} MiB file", "IOPS", "higher"),
    ("rand_write", "random write 4 KiB, ${rand_secs} s, ${rand_mib} MiB file", "IOPS", "higher"),
    ("untar", "untar $tree_count files, $((tree_bytes / 1000000)) MB", "s", "lower"),
    ("ls_lR", "ls -lR of the tree, cold", "s", "lower"),
    ("rm_rf", "rm -rf of the tree", "s", "lower"),
    ("hot_open", "open/read/close of one 16 KiB file x $hot_opens", "us/op", "lower"),
    ("kms_calls", "KMS calls (DEK cache misses) in that hot loop", "calls", "lower"),
    ("rss_mib", "daemon resident memory after the run (VmRSS)", "MiB", "lower"),
    ("hwm_mib", "daemon peak resident memory (VmHWM)", "MiB", "lower"),
]
targets = ["plain", "kmsfs", "gocryptfs", "limit"]
def fmt(v, target, key):
    if f"{target}.{key}" in failed_keys and v is None:
        return "FAILED"
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.0f}" if v == int(v) else f"{v:.2f}"
# The tables of several rounds: two decimals for every value under 100 in a row that has a
# fraction anywhere, so the values of one row line up.
def fmt_in_row(v, row_values):
    if v is None:
        return "-"
    if abs(v) < 100 and any(x is not None and abs(x) < 100 and x != int(x) for x in row_values):
        return f"{v:.2f}"
    return fmt(v, "", "")
def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None
def show_ratio(r):
    return "-" if r is None else f"{r:.2f}x"
table = []
spread_table = []
every_table = []
ran = [t for t in targets if any(tt == t for tt, _ in series)]
others = [o for o in ("gocryptfs", "limit") if o in ran and "kmsfs" in ran]
out = {"mode": mode, "rows": rows_mode, "rounds": rounds, "machine": host,
       "params": {"seq_mib": $seq_mib, "rand_mib": $rand_mib, "rand_secs": $rand_secs,
                  "tree_files": $tree_count, "tree_bytes": $tree_bytes, "hot_opens": $hot_opens},
       "kmsfs_dek_cache_hot_loop": {"hits": values.get(("kmsfs", "dek_hits")),
                                    "misses": values.get(("kmsfs", "kms_calls"))},
       "failed": failed, "round_info": round_info, "results": {}}
for key, label, unit, better in rows:
    cells = {t: values.get((t, key)) for t in targets}
    if all(v is None for v in cells.values()) and not any(f"{t}.{key}" in failed_keys for t in targets):
        continue
    spreads = {t: spread(series.get((t, key))) for t in targets}
    row_values = [v for t in targets for v in series.get((t, key)) or []]
    # The worst round of each target: the slowest one.
    worst = {t: spreads[t][2 if better == "lower" else 0] for t in targets}
    k = cells["kmsfs"]
    ratios = [ratio(k, cells[o]) for o in ("gocryptfs", "limit")]
    worst_ratios = [ratio(worst["kmsfs"], worst[o]) for o in ("gocryptfs", "limit")]
    out["results"][key] = {"label": label, "unit": unit, "better": better, **cells,
                           "kmsfs_over_gocryptfs": ratios[0], "kmsfs_over_limit": ratios[1],
                           "kmsfs_over_gocryptfs_worst": worst_ratios[0],
                           "kmsfs_over_limit_worst": worst_ratios[1],
                           "every_round": {t: series.get((t, key)) for t in targets},
                           "min": {t: spreads[t][0] for t in targets},
                           "median": {t: spreads[t][1] for t in targets},
                           "max": {t: spreads[t][2] for t in targets}}
    title = f"{label} [{unit}, {better} is better]"
    table.append((title, *(fmt(cells[t], t, key) for t in targets), *(show_ratio(r) for r in ratios)))
    def spread_cell(t):
        lo, med, hi = spreads[t]
        missing = sum(1 for r in range(1, rounds + 1) if (t, key, r) in failed_at)
        text = "-" if med is None else " / ".join(fmt_in_row(v, row_values) for v in (lo, med, hi))
        return text if not missing else f"{text} ({missing} FAILED)"
    spread_table.append((title, *(spread_cell(t) for t in ran),
                         *(c for o in others for c in (show_ratio(ratios[("gocryptfs", "limit").index(o)]),
                                                       show_ratio(worst_ratios[("gocryptfs", "limit").index(o)])))))
    first = True
    for t in ran:
        cells_t = series.get((t, key))
        if cells_t is None and f"{t}.{key}" not in failed_keys:
            continue
        every_table.append((title if first else "", t,
                            *("FAILED" if (t, key, r + 1) in failed_at else fmt_in_row(v, row_values)
                              for r, v in enumerate(cells_t or [None] * rounds))))
        first = False
def print_table(header, table, left=1):
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
    def line(r):
        return "| " + " | ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i]) for i, c in enumerate(r)) + " |"
    print(line(header))
    print("|" + "|".join(("-" * (w + 1) + ":" if i >= left else "-" * (w + 2)) for i, w in enumerate(widths)) + "|")
    for r in table:
        print(line(r))
print()
if rounds == 1:
    print(f"kmsfs benchmark ({mode}{' run: small sizes, not the reference numbers' if mode == 'quick' else ''})")
else:
    print(f"kmsfs benchmark ({mode}, {rounds} rounds{', tree rows only' if rows_mode == 'tree' else ''}"
          f"{': small sizes, not the reference numbers' if mode == 'quick' else ''})")
print(f"machine: {machine}")
print("limit: libfuse's passthrough_hp example (no crypto, data through the daemon, its default caches)")
print()
if rounds == 1:
    print_table(("workload", "plain", "kmsfs", "gocryptfs", "limit", "kmsfs/gocryptfs", "kmsfs/limit"), table)
else:
    print(f"min / median / max of {rounds} rounds, each on fresh mounts; ratios of the medians, and of")
    print("the worst rounds (each target's slowest: its max time, its min MB/s or IOPS)")
    print()
    print_table(("workload", *ran, *(f"kmsfs/{o} {w}" for o in others for w in ("median", "worst"))),
                spread_table)
    print()
    print("every value, in run order")
    print()
    print_table(("workload", "target", *(f"round {r}" for r in range(1, rounds + 1))), every_table, 2)
    print()
    print_table(("round", "order", "load average at start", "CPU steal, %", "seconds"),
                [(str(i["round"]), " ".join(i["order"]), i["load_average"], f"{i['steal_pct']:.1f}",
                  f"{i['seconds']:.0f}") for i in round_info], 2)
if failed:
    print(f"\nFAILED workloads: {', '.join(failed)} (their errors are above; later rows of that target may be on a partial tree)")
if json_out:
    with open(json_out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"\nJSON written to {json_out}")
PY
}

# ---------------------------------------------------------------------------------------------

wanted() { [[ ",$only," == *",$1,"* ]]; }

target_dir() {
  case "$1" in
    plain) echo "$work/plain" ;;
    *) echo "$work/$1/mnt" ;;
  esac
}

round_label=""

# "steal total" CPU ticks of the whole machine from /proc/stat, and the share of steal time
# between two such readings, in percent: what the hypervisor took from this VM.
cpu_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit }' /proc/stat; }
steal_pct() { # "STEAL TOTAL" "STEAL TOTAL"
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]
    printf "%.1f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

main() {
  local started
  started=$(now)
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  install_tools
  build
  if wanted limit; then build_limit; fi
  make_tree_tarball
  local base="${backing:-$repo/target/bench/run}"
  mkdir -p "$base"
  work=$(mktemp -d "$(realpath "$base")/kmsfs-bench.XXXXXX")
  setup_targets
  local bench_started
  bench_started=$(now)
  say "$mode run in $work"
  local targets=() order=() i name
  wanted plain && targets+=(plain)
  wanted kmsfs && targets+=(kmsfs)
  if ! wanted gocryptfs; then
    :
  elif [ "$have_gocryptfs" -eq 1 ]; then
    targets+=(gocryptfs)
  else
    say "gocryptfs is not installed and apt has no package: its column stays empty"
  fi
  if wanted limit && [ -n "$limit_bin" ]; then targets+=(limit); fi
  local runner=run_target
  [ "$rows" = all ] || runner=run_tree_target
  : >"$work/rounds.tsv"
  for ((round = 1; round <= rounds; round++)); do
    # Odd rounds in the order above, even rounds reversed: no target always goes first.
    order=()
    for i in "${!targets[@]}"; do
      if ((round % 2)); then order+=("${targets[i]}"); else order=("${targets[i]}" "${order[@]}"); fi
    done
    local load round_started steal_before
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    round_started=$(now)
    steal_before=$(cpu_ticks)
    if [ "$rounds" -gt 1 ]; then
      round_label=" (round $round of $rounds)"
      say "round $round of $rounds: ${order[*]}; load average $load"
    fi
    for name in "${order[@]}"; do
      "$runner" "$name" "$(target_dir "$name")" "${name}_phase_mount" "${name}_phase_unmount"
    done
    local secs steal
    secs=$(since "$round_started")
    steal=$(steal_pct "$steal_before" "$(cpu_ticks)")
    [ "$rounds" -eq 1 ] || say "round $round took $secs s; CPU steal time ${steal}%"
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "${order[*]}" "$load" "$steal" "$secs" >>"$work/rounds.tsv"
  done
  report
  echo
  say "benchmark took $(since "$bench_started") s ($(since "$started") s with install, build and tarball)"
}

main
