#!/usr/bin/env bash
# Every test: formatting, lints, unit tests and the integration tests that mount for real.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v getfattr >/dev/null 2>&1 || missing+=(attr)
# POSIX ACL tools for the conformance test; ext4 tools and losetup/fstrim for the volume test.
command -v setfacl >/dev/null 2>&1 || missing+=(acl)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v fstrim >/dev/null 2>&1 || missing+=(util-linux)
# The etcd client crate compiles etcd's protobuf files (protoc); the etcd-store tests start a
# real etcd and use etcdctl.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
# systemd-analyze verify checks the units in contrib/systemd (tests/ops.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)   # tests/tour.rs: lo up in its own network namespace
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
[ -e /dev/fuse ] || as_root modprobe fuse || true
# The official Exoscale Python client (tests/server_setup.rs proves it works unchanged against
# `kmsfs kms serve`) and the Prometheus text parser (tests/metrics.rs checks every scrape with
# it) go into a virtual environment under target/ (never the system's Python), where those
# tests look for them.
venv=target/python-venv
if ! "$venv/bin/python3" -c "import exoscale.api.v2, prometheus_client.parser" >/dev/null 2>&1; then
  echo "== installing the exoscale Python client and prometheus-client into $venv"
  python3 -c "import ensurepip" >/dev/null 2>&1 || { as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv; }
  { python3 -m venv "$venv" && "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
      "exoscale==0.16.4" "prometheus-client==0.26.0"; } \
    || echo "== (the venv or pip failed: the Python-client test will be skipped, the metrics tests will fail)"
fi

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
# cargo's own status: with pipefail, `|| true` would overwrite PIPESTATUS with true's.
set +e
cargo test --all-targets --no-fail-fast 2>&1 | tee target/test-output.txt | grep -E '^(test result|running|test .*FAILED|failures:|---- )'
status=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^test result' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -E '^test result' target/test-output.txt | awk '{s+=$6} END {print s+0}')
echo "== $passed passed, $failed failed in $(( $(date +%s) - start )) s"
if [ "$status" -ne 0 ]; then
  echo "== FAILED; the full output is in target/test-output.txt"
  grep -A30 -E '^---- ' target/test-output.txt | head -200 || true
fi
# Fuzz targets (fuzz/, docs/TESTING.md): `cargo test` above replays their checked-in corpus;
# with a nightly toolchain and cargo-fuzz, each also runs 10 s under libFuzzer.
if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
  echo "== fuzz targets, 10 s each under libFuzzer"
  scripts/fuzz.sh 10 || status=1
else
  echo "== fuzz targets not run under libFuzzer (no nightly toolchain or no cargo-fuzz); their corpus replay ran in cargo test"
fi
exit "$status"
