#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ under libFuzzer (cargo +nightly fuzz), one after the other,
# for SECONDS each (default 600), and prints per target: runs, crashes, timeouts, out-of-memory.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each run starts from the checked-in seeds (fuzz/corpus/TARGET/, read only) and keeps what it
# finds in fuzz/corpus-run/TARGET/ (not checked in). A crash, panic or timeout leaves its input
# in fuzz/artifacts/TARGET/ and stops that target's run; the script goes on with the next and
# exits 1 at the end. Installs cargo-fuzz (and the nightly toolchain) when absent.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-600}
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal || exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz || exit 2
fi

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# -a: debug assertions and overflow checks on, as in the unit tests.
echo "== building ${#targets[@]} targets"
cargo +nightly fuzz build -a || exit 2

failed=0
summary=()
for target in "${targets[@]}"; do
  run_corpus="$root/fuzz/corpus-run/$target"
  artifacts="$root/fuzz/artifacts/$target"
  log="$root/fuzz/artifacts/$target.log"
  mkdir -p "$run_corpus" "$artifacts"
  stamp="$artifacts/.started"
  touch "$stamp"
  echo "== $target: ${seconds} s"
  cargo +nightly fuzz run -a "$target" "$run_corpus" "$root/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  status=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  found() { find "$artifacts" -type f -name "$1-*" -newer "$stamp" | wc -l; }
  crashes=$(found crash)
  timeouts=$(found timeout)
  ooms=$(found oom)
  panics=$(grep -c "panicked at" "$log")
  line=$(printf '%-12s runs %10s  crashes %s  panics %s  timeouts %s  oom %s  (exit %s)' \
    "$target" "${runs:-?}" "$crashes" "$panics" "$timeouts" "$ooms" "$status")
  echo "$line"
  summary+=("$line")
  if [ "$status" -ne 0 ] || [ $((crashes + timeouts + ooms)) -gt 0 ]; then
    failed=1
    echo "== $target failed; its log: $log"
    grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -10
  fi
done

echo "== fuzzing summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
