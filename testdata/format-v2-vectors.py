#!/usr/bin/env python3
"""Computes the kmsfs format v2 name test vectors, independently of the Rust code.

    python3 testdata/format-v2-vectors.py > testdata/format-v2-vectors.json

Uses only Python's `cryptography` package (AES-SIV as RFC 5297 defines it, HKDF-SHA256) and the
standard library. docs/FORMAT.md ("Version 2: names") describes every step; the Rust side checks
the output in src/format/names/tests/vectors.rs (`format_v2_vectors`).
"""

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FS_KEY = bytes(range(32))
DIR_ID = bytes(range(0xA0, 0xB0))
OTHER_DIR_ID = bytes(16)
TARGET_NONCE = bytes(range(0x10, 0x20))
XATTR_NONCE = bytes(range(0x20, 0x30))

MAX_SHORT_CIPHER_NAME = 255
LONG_PREFIX = "kmsfs.long."
LONG_SIDE_SUFFIX = ".name"


def derive(info):
    """A 64-byte AES-256-SIV key: HKDF-SHA256, ikm = FsKey, no salt (32 zero bytes)."""
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info).derive(FS_KEY)


NAMES_KEY = derive(b"kmsfs-names-v2")
SYMLINKS_KEY = derive(b"kmsfs-symlinks-v2")
XATTRS_KEY = derive(b"kmsfs-xattrs-v2")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def siv(key, ad, plain):
    """tag (16) || ciphertext."""
    return AESSIV(key).encrypt(plain, ad)


def encrypt_name(plain, dir_id=DIR_ID):
    return b64(siv(NAMES_KEY, [b"kmsfs-name-v2", dir_id], plain))


def long_name(cipher):
    if len(cipher) <= MAX_SHORT_CIPHER_NAME:
        return None
    return LONG_PREFIX + b64(hashlib.sha256(cipher.encode("ascii")).digest())


def name_vector(label, note, plain):
    cipher = encrypt_name(plain)
    short = long_name(cipher)
    return {
        "name": label,
        "note": note,
        "plaintext": plain.hex(),
        "plaintext_len": len(plain),
        "cipher": cipher,
        "cipher_len": len(cipher),
        "long_name": short,
        "long_side_file": None if short is None else short + LONG_SIDE_SUFFIX,
    }


def failure(label, note, cipher, expect, dir_id=DIR_ID):
    return {"name": label, "note": note, "dir_id": dir_id.hex(), "cipher": cipher, "expect": expect}


def main():
    utf8 = "Grüße, 世界 🌍.md".encode("utf-8")
    names = [
        name_vector("short", "An ASCII name: 9 bytes -> 25 SIV bytes -> 34 characters.", b"hello.txt"),
        name_vector("utf8", "UTF-8 is encrypted as bytes; no normalization.", utf8),
        name_vector(
            "longest-short",
            "175 bytes -> 191 SIV bytes -> 255 characters: the longest name stored as itself.",
            b"s" * 175,
        ),
        name_vector(
            "shortest-long",
            "176 bytes -> 192 SIV bytes -> 256 characters: the shortest name in the long form.",
            b"l" * 176,
        ),
        name_vector(
            "longest",
            "255 bytes -> 271 SIV bytes -> 362 characters: long form, a 54-character short name.",
            bytes(0x61 + i % 26 for i in range(255)),
        ),
    ]
    assert names[2]["long_name"] is None and names[3]["long_name"] is not None

    hello = encrypt_name(b"hello.txt")
    flipped = bytearray(siv(NAMES_KEY, [b"kmsfs-name-v2", DIR_ID], b"hello.txt"))
    flipped[20] ^= 0x01
    failures = [
        failure("other-dir", "The short vector's cipher name read in another directory.", hello, "auth", OTHER_DIR_ID),
        failure("flipped-byte", "The short vector with one ciphertext bit flipped.", b64(bytes(flipped)), "auth"),
        failure("dot", "Authenticates, but decrypts to \".\".", encrypt_name(b"."), "invalid"),
        failure("dot-dot", "Authenticates, but decrypts to \"..\".", encrypt_name(b".."), "invalid"),
        failure("slash", "Authenticates, but decrypts to a name with '/'.", encrypt_name(b"a/b"), "invalid"),
        failure("nul", "Authenticates, but decrypts to a name with NUL.", encrypt_name(b"a\0b"), "invalid"),
        failure("empty-plain", "Authenticates, but decrypts to the empty name.", encrypt_name(b""), "too-short"),
        failure(
            "too-long-plain",
            "Authenticates, but decrypts to 256 bytes: longer than any name.",
            encrypt_name(b"x" * 256),
            "too-long",
        ),
        failure("padded", "The short vector with base64 padding added.", hello + "==", "not-base64"),
        failure("standard-alphabet", "Base64 '+' and '/' are not base64url.", "ab+/" * 6, "not-base64"),
        failure("long-prefix", "A long form's short name is not itself a cipher name.", names[4]["long_name"], "not-base64"),
    ]

    target = b"../shared/docs/README.md"
    target_cipher = b64(TARGET_NONCE + siv(SYMLINKS_KEY, [b"kmsfs-symlink-v2", TARGET_NONCE], target))

    xattr_name = b"comment"
    xattr_cipher_name = b64(siv(XATTRS_KEY, [b"kmsfs-xattr-name-v2"], xattr_name))
    xattr_value = b"reviewed by ops"
    sealed = XATTR_NONCE + siv(
        XATTRS_KEY, [b"kmsfs-xattr-value-v2", xattr_cipher_name.encode("ascii"), XATTR_NONCE], xattr_value
    )

    out = {
        "comment": (
            "kmsfs format v2 name test vectors: a fixed filesystem key and directory id give exactly "
            "these cipher names, symlink target and xattr. Computed by testdata/format-v2-vectors.py "
            "with Python's cryptography package; checked by src/format/names/tests/vectors.rs "
            "(format_v2_vectors); described in docs/FORMAT.md. Every 'failures' entry must be "
            "rejected with the error kind in 'expect'."
        ),
        "fs_key": FS_KEY.hex(),
        "dir_id": DIR_ID.hex(),
        "keys": {
            "names": NAMES_KEY.hex(),
            "symlinks": SYMLINKS_KEY.hex(),
            "xattrs": XATTRS_KEY.hex(),
        },
        "names": names,
        "failures": failures,
        "symlink": {
            "note": "Target -> base64url(nonce || tag || ciphertext); 24 + 32 bytes -> 75 characters.",
            "nonce": TARGET_NONCE.hex(),
            "plaintext": target.hex(),
            "cipher": target_cipher,
        },
        "xattr": {
            "note": "user.comment = 'reviewed by ops': the name after 'user.' is deterministic, the value "
            "is nonce || tag || ciphertext (raw bytes) bound to the cipher name.",
            "name_plaintext": xattr_name.hex(),
            "name_cipher": xattr_cipher_name,
            "nonce": XATTR_NONCE.hex(),
            "value_plaintext": xattr_value.hex(),
            "value_sealed": sealed.hex(),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
