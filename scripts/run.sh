#!/usr/bin/env bash
# The main job: build kmsfs, create ./demo/cipher with the embedded KMS, mount it at ./demo/plain.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "== installing fuse3"
  as_root apt-get update -qq && as_root apt-get install -y -qq fuse3
fi
# The build compiles etcd's protobuf files (the etcd-client crate): it needs protoc.
command -v protoc >/dev/null 2>&1 || { as_root apt-get update -qq && as_root apt-get install -y -qq protobuf-compiler; }

echo "== building kmsfs (release; the first build takes several minutes)"
# cargo's own progress: a bar on a terminal, one "Compiling" line per crate otherwise.
cargo build --release
kmsfs="$PWD/target/release/kmsfs"

# `kmsfs` on PATH, as a link to the build (a rebuild updates it): /usr/local/bin as root,
# else ~/.cargo/bin (where cargo installs programs).
if [ "$(id -u)" -eq 0 ]; then bindir=/usr/local/bin; else bindir="$HOME/.cargo/bin"; fi
mkdir -p "$bindir"
ln -sfn "$kmsfs" "$bindir/kmsfs"
echo "== installed kmsfs on PATH: $bindir/kmsfs -> $kmsfs"
case ":$PATH:" in
  *":$bindir:"*) ;;
  *) echo "   ($bindir is not on your PATH: add it, e.g. export PATH=\"$bindir:\$PATH\")" ;;
esac
if [ "$(id -u)" -eq 0 ]; then
  echo "== installing the mount helpers, shell completions and manual pages"
  "$kmsfs" install-helpers
fi

demo="$PWD/demo"
mkdir -p "$demo/plain"
chmod 700 "$demo"
# A demo passphrase, kept beside the demo (0600). For real data, type it at the prompt or keep
# the file somewhere safer.
if [ ! -s "$demo/passphrase" ]; then
  (umask 077; head -c 24 /dev/urandom | base64 > "$demo/passphrase")
fi
common=(--passphrase-file "$demo/passphrase")

if [ ! -e "$demo/cipher/kmsfs.conf" ]; then
  echo "== creating the cipher directory $demo/cipher"
  "$kmsfs" init "$demo/cipher" --keystore "$demo/keystore" "${common[@]}"
fi

if grep -qs " $demo/plain " /proc/self/mounts; then
  echo "== $demo/plain is already mounted"
else
  echo "== mounting"
  "$kmsfs" mount "$demo/cipher" "$demo/plain" "${common[@]}" --log "$demo/kmsfs.log"
fi

cat <<TXT

kmsfs is mounted: plaintext at $demo/plain, ciphertext in $demo/cipher.
Try:
  echo "hello, envelope encryption" > demo/plain/hello.txt
  cat demo/plain/hello.txt                          # plaintext through the mount
  od -A d -t x1 demo/cipher/hello.txt | head -5      # ciphertext on disk
  kmsfs inspect demo/cipher/hello.txt              # header: file id, key id, wrapped DEK
  kmsfs key list --keystore demo/keystore --passphrase-file demo/passphrase
  kmsfs fsck demo/cipher --passphrase-file demo/passphrase
The daemon logs to $demo/kmsfs.log.
Unmount with:
  kmsfs unmount demo/plain
TXT
