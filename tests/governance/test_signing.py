"""Keys from a file / the environment / ephemeral, DSSE envelopes, and what makes them fail."""
import base64
import json

import pytest

from holo_jax.errors import HoloError
from holo_jax.governance.signing import (KEY_ENV, load_signing_key, open_envelope, pae, sign_envelope,
                                         write_private_key)


def test_pae_matches_the_dsse_spec_example():
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world").
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert load_signing_key().ephemeral
    written = write_private_key(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    from_file = load_signing_key(tmp_path / "k.pem")
    assert from_file.key_id == written.key_id and from_file.source.startswith("file:") and not from_file.ephemeral
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "k.pem"))
    assert load_signing_key().key_id == written.key_id
    monkeypatch.setenv(KEY_ENV, (tmp_path / "k.pem").read_text())
    env = load_signing_key()
    assert env.key_id == written.key_id and env.source == "env"


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot be read"),
    ("not a key", "is not an unencrypted PEM private key"),
])
def test_bad_keys_are_one_sentence(tmp_path, content, fragment):
    path = tmp_path / "k.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(HoloError, match=fragment):
        load_signing_key(path)


def test_a_non_ed25519_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(pem)
    with pytest.raises(HoloError, match="not an Ed25519 key"):
        load_signing_key(tmp_path / "ec.pem")


def test_envelopes_verify_and_fail_when_they_should():
    key, other = load_signing_key(), load_signing_key()
    keys = {key.key_id: key.private.public_key()}
    env = sign_envelope(key, "application/x-test", {"a": 1})
    payload, kid = open_envelope(env, keys)
    assert payload == {"a": 1} and kid == key.key_id
    with pytest.raises(ValueError, match="not a key announced"):
        open_envelope(sign_envelope(other, "application/x-test", {"a": 1}), keys)
    retyped = {**env, "payloadType": "application/x-other"}  # PAE binds the type
    with pytest.raises(ValueError, match="does not verify"):
        open_envelope(retyped, keys)
    changed = {**env, "payload": base64.b64encode(json.dumps({"a": 2}).encode()).decode()}
    with pytest.raises(ValueError, match="does not verify"):
        open_envelope(changed, keys)
    with pytest.raises(ValueError, match="no signature"):
        open_envelope({**env, "signatures": []}, keys)
    forged_id = {**env, "signatures": [{"keyid": key.key_id, "sig": sign_envelope(other, "application/x-test",
                                                                                 {"a": 1})["signatures"][0]["sig"]}]}
    with pytest.raises(ValueError, match="does not verify"):
        open_envelope(forged_id, keys)
