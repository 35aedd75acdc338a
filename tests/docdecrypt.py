"""An independent decryptor of encrypted backups, written from docs/format.md ("Encrypted
backups") alone, with nothing of repobackup: the tests prove the format page with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = ["doc_blob_id", "doc_decrypt_member", "doc_open_key_file"]


def _hkdf(ikm: bytes, info: str, salt: bytes = bytes(32), length: int = 32) -> bytes:
    """HKDF-SHA256; "no salt" is spelled out as the 32 zero bytes the format says it is."""
    return HKDF(hashes.SHA256(), length, salt, info.encode("ascii")).derive(ikm)


def doc_open_key_file(text: bytes, passphrase: str) -> bytes:
    doc = json.loads(text)
    kdf = doc["kdf"]
    assert doc["version"] == 1
    assert kdf["name"] == "scrypt"
    assert doc["cipher"] == "AES-256-GCM"
    salt = base64.b64decode(kdf["salt"])
    kek = Scrypt(salt, 32, kdf["n"], kdf["r"], kdf["p"]).derive(passphrase.encode("utf-8"))
    ad = f"repobackup key file v1 {doc['id']} {doc['keySet']}".encode("ascii")
    master = AESGCM(kek).decrypt(
        base64.b64decode(doc["nonce"]), base64.b64decode(doc["masterKey"]), ad
    )
    assert _hkdf(master, "repobackup key set id v1", length=16).hex() == doc["keySet"]
    return master


def doc_decrypt_member(master: bytes, stored: bytes, backup_id: str, name: str) -> bytes:
    header, body = stored[:27], stored[27:]
    magic, version, size, salt = header[:6], header[6], header[7:11], header[11:27]
    assert magic == b"RBKENC"
    assert version == 1
    segment = int.from_bytes(size, "big")
    member_key = _hkdf(master, "repobackup member encryption v1")
    aead = AESGCM(_hkdf(member_key, "repobackup member payload v1", salt=salt))
    ad = header
    for text in (backup_id, name):
        raw = text.encode("utf-8")
        ad += len(raw).to_bytes(4, "big") + raw
    pieces = [body[i : i + segment + 16] for i in range(0, len(body), segment + 16)] or [b""]
    plain = b""
    for i, piece in enumerate(pieces):
        flag = b"\x01" if i == len(pieces) - 1 else b"\x00"
        plain += aead.decrypt(i.to_bytes(11, "big") + flag, piece, ad)
    return plain


def doc_blob_id(master: bytes, sha256: str) -> str:
    key = _hkdf(master, "repobackup blob id v1")
    return hmac.new(key, bytes.fromhex(sha256), hashlib.sha256).hexdigest()
