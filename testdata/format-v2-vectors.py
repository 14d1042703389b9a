#!/usr/bin/env python3
"""Computes the kmsfs format v2 test vectors (names and the version 2 header), independently of
the Rust code.

    python3 testdata/format-v2-vectors.py > testdata/format-v2-vectors.json

Uses only Python's `cryptography` package (AES-SIV as RFC 5297 defines it, HKDF-SHA256,
HMAC-SHA256) and the standard library. docs/FORMAT.md ("Version 2: names", "Version 2: header")
describes every step; the Rust side checks the output in src/format/names/tests/vectors.rs
(`format_v2_vectors`), src/format/header/tests/vectors.rs and src/format/block.rs
(`format_test_vectors`, the "blocks").
"""

import base64
import hashlib
import json
import struct
import uuid

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
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


# The version 2 header vector: the DEK and file id of the version 1 header vector, a fixed
# filesystem id, and an 81-byte wrapped DEK (the length of the embedded KMS's blobs).
HEADER_DEK = bytes(range(32))
HEADER_FILE_ID = bytes(range(0xF0, 0x100))
HEADER_FS_ID = bytes(range(0xE0, 0xF0))
HEADER_KEY_ID = uuid.UUID("6f1c3c1e-9b2a-4d5e-8f7a-6b5c4d3e2f10")
HEADER_WRAPPED = bytes((0x30 + i) % 256 for i in range(81))
HEADER_LEN = 512
KEYING_OFFSET = 480
TAG_OFFSET = 496
# The keying: content key epoch 3, settled (not re-keying), 0x123456 seals reserved.
HEADER_EPOCH = 3
HEADER_SEALS = 0x123456


def length_prefixed(*fields):
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def dek_context_v2(fs_id, file_id, key_id):
    return length_prefixed(b"kmsfs-dek-v2", fs_id, file_id, key_id.bytes)


def header_v2(dek, file_id, key_id, wrapped, epoch, rekeying, seals):
    """magic, version 2, flags 0, reserved 0, file id, key id, length, wrapped DEK, zero padding
    up to 480, the keying (epoch u32, re-keying u32, seals u64, big-endian), then
    HMAC-SHA256(HKDF-SHA256(DEK, salt = file id, info = "kmsfs-header-v2"),
    bytes 0..28 || bytes 480..496)[:16]."""
    fixed = b"KMSFS\0" + struct.pack(">HHH", 2, 0, 0) + file_id
    slot = key_id.bytes + struct.pack(">H", len(wrapped)) + wrapped
    keying = struct.pack(">IIQ", epoch, 1 if rekeying else 0, seals)
    body = (fixed + slot).ljust(KEYING_OFFSET, b"\0") + keying
    header_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=file_id, info=b"kmsfs-header-v2").derive(dek)
    mac = hmac.HMAC(header_key, hashes.SHA256())
    mac.update(body[:28])
    mac.update(body[KEYING_OFFSET:TAG_OFFSET])
    tag = mac.finalize()[:16]
    out = body + tag
    assert len(out) == HEADER_LEN
    return out, tag


def mutation(label, note, offset, new, expect):
    return {"name": label, "note": note, "offset": offset, "bytes": new.hex(), "expect": expect}


def header_vector():
    header, tag = header_v2(
        HEADER_DEK, HEADER_FILE_ID, HEADER_KEY_ID, HEADER_WRAPPED, HEADER_EPOCH, False, HEADER_SEALS
    )
    flip = lambda offset, bit: bytes([header[offset] ^ bit])  # noqa: E731
    # What catches each change, in the order a reader checks: the parse ("magic", "version",
    # "flags", "reserved", "wrapped-len", "padding"), else the KMS ("kms": the context or the
    # wrapped DEK it is asked to unwrap differs, so the unwrap fails) and the tag ("tag").
    mutations = [
        mutation("magic", "A flipped bit in the magic.", 0, flip(0, 0x01), "magic"),
        mutation("version-3", "Version 3: unknown to this build.", 6, struct.pack(">H", 3), "version"),
        mutation(
            "version-1",
            "Version 1: the keying becomes version 1 padding, which must be zero (with a zero keying, "
            "the context would lose the key id and the tag key would change).",
            6,
            struct.pack(">H", 1),
            "padding",
        ),
        mutation("flags", "A flag set.", 9, flip(9, 0x01), "flags"),
        mutation("reserved", "A reserved bit set.", 10, flip(10, 0x80), "reserved"),
        mutation("file-id", "A flipped bit in the file id: in the context and under the tag.", 12, flip(12, 0x01), "kms+tag"),
        mutation("key-id-first", "A flipped bit in the key id's first byte: in the context only.", 28, flip(28, 0x01), "kms"),
        mutation("key-id-last", "A flipped bit in the key id's last byte.", 43, flip(43, 0x80), "kms"),
        mutation("wrapped-len-zero", "A wrapped DEK length of 0.", 44, struct.pack(">H", 0), "wrapped-len"),
        mutation("wrapped-len-435", "A wrapped DEK length past the slot (434 bytes).", 44, struct.pack(">H", 435), "wrapped-len"),
        mutation("wrapped-len-shorter", "81 -> 80: the last wrapped byte becomes padding, and is not zero.", 45, flip(45, 0x01), "padding"),
        mutation(
            "wrapped-len-longer",
            "81 -> 337: zero padding becomes part of the wrapped DEK, which the KMS refuses.",
            44,
            flip(44, 0x01),
            "kms",
        ),
        mutation("wrapped-dek", "A flipped bit in the wrapped DEK.", 46, flip(46, 0x01), "kms"),
        mutation("wrapped-dek-last", "A flipped bit in the wrapped DEK's last byte.", 46 + 80, flip(126, 0x80), "kms"),
        mutation("padding-first", "The first padding byte not zero.", 46 + 81, flip(127, 0x01), "padding"),
        mutation("padding-last", "The last padding byte not zero.", 479, flip(479, 0x01), "padding"),
        mutation("epoch", "Another content key epoch.", 483, flip(483, 0x01), "tag"),
        mutation("rekeying", "Re-keying said where it is not.", 487, bytes([1]), "tag"),
        mutation("rekeying-2", "Re-keying neither 0 nor 1.", 487, bytes([2]), "re-keying"),
        mutation("seals", "A lower seal count.", 495, flip(495, 0x01), "tag"),
        mutation("tag-first", "A flipped bit in the tag.", 496, flip(496, 0x01), "tag"),
        mutation("tag-last", "A flipped bit in the tag's last byte.", 511, flip(511, 0x80), "tag"),
    ]
    return {
        "note": (
            "A version 2 header: DEK and file id of the version 1 header vector, key id "
            "6f1c3c1e-9b2a-4d5e-8f7a-6b5c4d3e2f10, an 81-byte wrapped DEK 30 31 32 ... 80, keying "
            "epoch 3, settled, 0x123456 seals. The DEK is wrapped under dek_context (label "
            "kmsfs-dek-v2, fs id, file id, key id); the tag is HMAC-SHA256(HKDF-SHA256(ikm=DEK, "
            "salt=file id, info='kmsfs-header-v2'), bytes 0..28 || bytes 480..496), first 16 bytes. "
            "Each mutation replaces the bytes at its offset and must be caught by 'expect'."
        ),
        "dek": HEADER_DEK.hex(),
        "fs_id": HEADER_FS_ID.hex(),
        "file_id": HEADER_FILE_ID.hex(),
        "key_id": str(HEADER_KEY_ID),
        "wrapped_dek": HEADER_WRAPPED.hex(),
        "epoch": HEADER_EPOCH,
        "rekeying": False,
        "seals": HEADER_SEALS,
        "dek_context": dek_context_v2(HEADER_FS_ID, HEADER_FILE_ID, HEADER_KEY_ID).hex(),
        "tag": tag.hex(),
        "header": header.hex(),
        "mutations": mutations,
    }


def content_key(dek, file_id, epoch):
    """Epoch 0: the DEK. Epoch e > 0: HKDF-SHA256(DEK, salt = file id,
    info = "kmsfs-content-v2" || e as u32 big-endian)."""
    if epoch == 0:
        return dek
    info = b"kmsfs-content-v2" + struct.pack(">I", epoch)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=file_id, info=info).derive(dek)


def block_v2(dek, file_id, index, last, nonce, plain, epoch=0):
    """nonce || AES-256-GCM(plain) || tag under the epoch's content key,
    AAD "kmsfs-block-v2" || file id || index || last."""
    aad = b"kmsfs-block-v2" + file_id + struct.pack(">Q", index) + bytes([1 if last else 0])
    return nonce + AESGCM(content_key(dek, file_id, epoch)).encrypt(nonce, plain, aad)


def block_vector(label, note, index, last, nonce, plain, epoch=0):
    sealed = block_v2(HEADER_DEK, HEADER_FILE_ID, index, last, nonce, plain, epoch)
    out = {
        "name": label,
        "note": note,
        "dek": HEADER_DEK.hex(),
        "file_id": HEADER_FILE_ID.hex(),
        "epoch": epoch,
        "content_key": content_key(HEADER_DEK, HEADER_FILE_ID, epoch).hex(),
        "block_index": index,
        "last": last,
        "nonce": nonce.hex(),
        "plaintext": plain.hex(),
        "ciphertext": sealed.hex(),
    }
    if len(sealed) > 64:
        out["ciphertext_sha256"] = hashlib.sha256(sealed).hexdigest()
    return out


def block_vectors():
    return [
        block_vector(
            "last-block",
            "A 13-byte file: its only block, sealed as the last (last = 1).",
            0,
            True,
            bytes([1] * 12),
            b"hello, kmsfs\n",
        ),
        block_vector(
            "inner-block",
            "Block 0 of a 4,109-byte file: a whole block, sealed as an inner one (last = 0).",
            0,
            False,
            bytes(range(12)),
            bytes(i % 251 for i in range(4096)),
        ),
        block_vector(
            "last-of-two",
            "Block 1, the last, of the same 4,109-byte file.",
            1,
            True,
            bytes(range(12, 24)),
            b"the 13 bytes.",
        ),
        block_vector(
            "epoch-3",
            "The last-block vector sealed under the content key of epoch 3 (the header vector's).",
            0,
            True,
            bytes([1] * 12),
            b"hello, kmsfs\n",
            3,
        ),
    ]


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
        XATTRS_KEY, [b"kmsfs-xattr-value-v2", b"user." + xattr_cipher_name.encode("ascii"), XATTR_NONCE], xattr_value
    )

    out = {
        "comment": (
            "kmsfs format v2 test vectors: a fixed directory id gives exactly this kmsfs.dirid link target; a fixed filesystem key and directory id give exactly "
            "these cipher names, symlink target and xattr; a fixed DEK, ids and wrapped DEK give exactly "
            "this version 2 header and DEK context. Computed by testdata/format-v2-vectors.py "
            "with Python's cryptography package; checked by src/format/names/tests/vectors.rs "
            "(format_v2_vectors) and src/format/header/vector_tests.rs (header_v2_test_vector); "
            "described in docs/FORMAT.md. Every 'failures' entry must be rejected with the error "
            "kind in 'expect', every header mutation caught as its 'expect' says."
        ),
        "fs_key": FS_KEY.hex(),
        "dir_id": DIR_ID.hex(),
        "dir_id_link": b64(DIR_ID),
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
            "is nonce || tag || ciphertext (raw bytes) bound to the name as stored, 'user.' included.",
            "name_plaintext": xattr_name.hex(),
            "name_cipher": xattr_cipher_name,
            "nonce": XATTR_NONCE.hex(),
            "value_plaintext": xattr_value.hex(),
            "value_sealed": sealed.hex(),
        },
        "header": header_vector(),
        "blocks": block_vectors(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
