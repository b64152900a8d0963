"""Ed25519 signing keys, DSSE envelopes and in-toto statements (through `cryptography`).

Key: `--signing-key FILE` or `HOLO_JAX_SIGNING_KEY` (a path, or the PEM itself) holding an
Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`); with neither, a key is
generated for this process alone ("ephemeral"): its public key is recorded in the log, so the log
verifies, but anyone able to rewrite the whole log could generate their own, so pin the key
(`verify --trusted-key`) where that matters.

Envelopes follow DSSE v1 (github.com/secure-systems-lab/dsse, "protocol.md"): the signature is
over PAE(payloadType, payload) = "DSSEv1" SP len(type) SP type SP len(body) SP body, so a
signature can never be replayed under another payload type. Statements follow in-toto
Statement v1 (github.com/in-toto/attestation, spec/v1/statement.md).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from holo_jax.errors import HoloError
from holo_jax.governance.canonical import canonical_json

KEY_ENV = "HOLO_JAX_SIGNING_KEY"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@dataclasses.dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    source: str  # "file:<path>" | "env" | "ephemeral"

    @property
    def public_pem(self) -> str:
        return public_pem(self.private.public_key())

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    @property
    def ephemeral(self) -> bool:
        return self.source == "ephemeral"

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, hex: short enough to print, unique per key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_pem(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_signing_key(path: str | Path | None = None) -> SigningKey:
    """The key from `path`, else from $HOLO_JAX_SIGNING_KEY (a path or the PEM text), else a fresh
    ephemeral one. A key that is named but unusable is an error, never silently replaced."""
    if path is not None:
        return SigningKey(_private_from_pem(_read_key_file(Path(path), "--signing-key"), f"--signing-key {path}"),
                          f"file:{Path(path).absolute()}")
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        if env.startswith("-----BEGIN"):
            return SigningKey(_private_from_pem(env.encode(), f"${KEY_ENV}"), "env")
        return SigningKey(_private_from_pem(_read_key_file(Path(env), f"${KEY_ENV}"), f"${KEY_ENV}={env}"),
                          f"file:{Path(env).absolute()}")
    return SigningKey(Ed25519PrivateKey.generate(), "ephemeral")


def write_private_key(path: str | Path) -> SigningKey:
    """Generate a key and write it as PKCS#8 PEM, readable by the owner only."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return SigningKey(private, f"file:{path.absolute()}")


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise HoloError(f"{what} {path} cannot be read ({e.strerror}); give an Ed25519 private key in PEM "
                        f"(make one with `openssl genpkey -algorithm ed25519 -out {path.name}`).") from None


def _private_from_pem(pem: bytes, what: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise HoloError(f"{what} is not an unencrypted PEM private key ({str(e).splitlines()[0]}); give an "
                        f"Ed25519 key made with `openssl genpkey -algorithm ed25519`.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HoloError(f"{what} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key; make one with "
                        f"`openssl genpkey -algorithm ed25519`.")
    return key


# ---- DSSE ----

def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(key: SigningKey, payload_type: str, payload: Mapping[str, Any]) -> dict:
    body = canonical_json(payload)
    sig = key.sign(pae(payload_type, body))
    return {"payloadType": payload_type, "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(sig).decode()}]}


def open_envelope(envelope: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> tuple[dict, str]:
    """The verified payload and the id of the key that signed it; ValueError saying what is wrong.
    `keys`: key id -> public key of the keys allowed to sign here."""
    import json

    try:
        payload_type = envelope["payloadType"]
        body = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed envelope ({type(e).__name__}: {e})") from None
    if not signatures:
        raise ValueError("the envelope has no signature")
    for s in signatures:  # every signature present must verify, not just one of them
        kid = s.get("keyid") if isinstance(s, Mapping) else None
        if kid not in keys:
            raise ValueError(f"signed by key {str(kid)[:16]}, which is not a key announced in this log")
        try:
            keys[kid].verify(base64.b64decode(s["sig"], validate=True), pae(payload_type, body))
        except (InvalidSignature, KeyError, TypeError, ValueError):
            raise ValueError(f"the signature by key {kid[:16]} does not verify") from None
    try:
        return json.loads(body), signatures[0]["keyid"]
    except ValueError:
        raise ValueError("the signed payload is not JSON") from None


def statement(subjects: list[dict], predicate_type: str, predicate: Mapping[str, Any]) -> dict:
    """An in-toto v1 Statement; `subjects`: [{"name": ..., "digest": {"sha256": hex}}]."""
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": predicate_type,
            "predicate": dict(predicate)}
