"""AES-256-GCM keyring, master-key loading and masking of exchange credentials."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from core.security.account_secrets import ExchangeCredentials, mask_api_key, secret_aad
from core.security.crypto import KeyRing, KeyRingError, SecretDecryptionError
from core.security.master_key import (
    MasterKeyError,
    MasterKeyMissing,
    add_key_version,
    dev_key_file,
    encode_key,
    format_keyring_source,
    load_keyring,
    parse_keyring_source,
)
from core.settings import Environment, RuntimeSettings, SecuritySettings

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
AAD = secret_aad("6f9619ff-8b86-d011-b42d-00c04fc964ff", "api_secret")
PLAINTEXT = "sEcReT-api-secret-0123456789"


def _runtime(env: str, data_dir: Path) -> RuntimeSettings:
    return RuntimeSettings(env=Environment(env), data_dir=data_dir)


def _security(master_key: str | None = None, master_key_file: Path | None = None) -> SecuritySettings:
    return SecuritySettings(master_key=master_key, master_key_file=master_key_file)


def test_encrypt_then_decrypt_returns_plaintext() -> None:
    keyring = KeyRing({1: KEY_1})
    blob = keyring.encrypt(PLAINTEXT, AAD)
    assert keyring.decrypt(blob, AAD) == PLAINTEXT
    assert PLAINTEXT.encode() not in blob


def test_same_plaintext_encrypts_to_different_blobs() -> None:
    keyring = KeyRing({1: KEY_1})
    assert keyring.encrypt(PLAINTEXT, AAD) != keyring.encrypt(PLAINTEXT, AAD)


def test_blob_carries_current_key_version_in_header() -> None:
    keyring = KeyRing({1: KEY_1, 7: KEY_2})
    blob = keyring.encrypt(PLAINTEXT, AAD)
    assert blob[:3] == b"PK1"
    assert int.from_bytes(blob[3:7], "big") == 7
    assert KeyRing.version_of(blob) == 7
    assert keyring.current_version == 7 and keyring.versions == (1, 7)


def test_old_version_blob_still_decrypts_after_new_key_added() -> None:
    old = KeyRing({1: KEY_1}).encrypt(PLAINTEXT, AAD)
    assert KeyRing({1: KEY_1, 2: KEY_2}).decrypt(old, AAD) == PLAINTEXT


def test_wrong_aad_fails_without_revealing_plaintext() -> None:
    keyring = KeyRing({1: KEY_1})
    blob = keyring.encrypt(PLAINTEXT, AAD)
    other_row = secret_aad("00000000-0000-0000-0000-000000000001", "api_secret")
    for aad in (other_row, secret_aad("6f9619ff-8b86-d011-b42d-00c04fc964ff", "api_key")):
        with pytest.raises(SecretDecryptionError) as info:
            keyring.decrypt(blob, aad)
        assert PLAINTEXT not in str(info.value)
        assert encode_key(KEY_1) not in str(info.value)


@pytest.mark.parametrize("position", [5, 7, 12, 20, -1])
def test_tampered_byte_fails(position: int) -> None:
    keyring = KeyRing({1: KEY_1, 2: KEY_2})
    blob = bytearray(keyring.encrypt(PLAINTEXT, AAD))
    blob[position] ^= 0x01
    with pytest.raises(SecretDecryptionError):
        keyring.decrypt(bytes(blob), AAD)


def test_version_header_swap_fails_even_when_both_keys_known() -> None:
    keyring = KeyRing({1: KEY_1, 2: KEY_2})
    blob = bytearray(KeyRing({1: KEY_1}).encrypt(PLAINTEXT, AAD))
    blob[3:7] = (2).to_bytes(4, "big")
    with pytest.raises(SecretDecryptionError):
        keyring.decrypt(bytes(blob), AAD)


def test_unknown_version_fails() -> None:
    blob = KeyRing({1: KEY_1, 2: KEY_2}).encrypt(PLAINTEXT, AAD)
    with pytest.raises(SecretDecryptionError, match="version 2"):
        KeyRing({1: KEY_1}).decrypt(blob, AAD)


@pytest.mark.parametrize("blob", [b"", b"PK1", b"XX1" + bytes(40), bytes(64)])
def test_malformed_blob_fails(blob: bytes) -> None:
    with pytest.raises(SecretDecryptionError):
        KeyRing({1: KEY_1}).decrypt(blob, AAD)


def test_keyring_rejects_short_key_and_bad_version() -> None:
    with pytest.raises(KeyRingError):
        KeyRing({1: KEY_1[:16]})
    with pytest.raises(KeyRingError):
        KeyRing({0: KEY_1})
    with pytest.raises(KeyRingError):
        KeyRing({})


def test_reloader_picks_up_new_version() -> None:
    calls: list[int] = []

    def reload() -> dict[int, bytes]:
        calls.append(1)
        return {1: KEY_1, 2: KEY_2}

    reader = KeyRing({1: KEY_1}, reloader=reload)
    blob = KeyRing({1: KEY_1, 2: KEY_2}).encrypt(PLAINTEXT, AAD)
    assert reader.decrypt(blob, AAD) == PLAINTEXT
    assert reader.current_version == 2
    assert reader.decrypt(blob, AAD) == PLAINTEXT
    assert len(calls) == 1


def test_failing_reloader_surfaces_as_decryption_error() -> None:
    def reload() -> dict[int, bytes]:
        raise MasterKeyError("master key file /x does not exist")

    blob = KeyRing({2: KEY_2}).encrypt(PLAINTEXT, AAD)
    with pytest.raises(SecretDecryptionError, match="reloading"):
        KeyRing({1: KEY_1}, reloader=reload).decrypt(blob, AAD)


def test_bare_key_parses_as_version_one() -> None:
    assert parse_keyring_source(encode_key(KEY_1)) == {1: KEY_1}
    unpadded = base64.urlsafe_b64encode(KEY_1).decode().rstrip("=")
    assert parse_keyring_source(f"  {unpadded}\n") == {1: KEY_1}


def test_multiple_versions_parse_and_highest_is_current() -> None:
    source = f"1:{encode_key(KEY_1)}, 3:{encode_key(KEY_2)}"
    keys = parse_keyring_source(source)
    assert keys == {1: KEY_1, 3: KEY_2}
    assert KeyRing(keys).current_version == 3
    assert parse_keyring_source(format_keyring_source(keys)) == keys
    assert parse_keyring_source(f"1:{encode_key(KEY_1)}\n3:{encode_key(KEY_2)}\n") == keys


@pytest.mark.parametrize(
    "source",
    [
        "",
        "   ",
        "1:" + encode_key(KEY_1[:31]),
        "1:not*base64!",
        "0:" + encode_key(KEY_1),
        "x:" + encode_key(KEY_1),
        f"1:{encode_key(KEY_1)},1:{encode_key(KEY_2)}",
        f"{encode_key(KEY_1)},2:{encode_key(KEY_2)}",
        "1:" + encode_key(KEY_1 + b"extra"),
    ],
)
def test_malformed_keyring_source_rejected_without_echoing_it(source: str) -> None:
    with pytest.raises(MasterKeyError) as info:
        parse_keyring_source(source)
    key_text = source.split(":", 1)[-1].strip()
    if len(key_text) > 8:
        assert key_text not in str(info.value)


def test_dev_key_file_generated_once_with_private_permissions(tmp_path: Path) -> None:
    runtime = _runtime("dev", tmp_path / "data")
    first = load_keyring(_security(), runtime)
    path = dev_key_file(runtime)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    content = path.read_text()
    second = load_keyring(_security(), runtime)
    assert path.read_text() == content
    blob = first.encrypt(PLAINTEXT, AAD)
    assert second.decrypt(blob, AAD) == PLAINTEXT


def test_corrupt_dev_key_file_is_an_error_not_regenerated(tmp_path: Path) -> None:
    runtime = _runtime("dev", tmp_path)
    path = dev_key_file(runtime)
    path.parent.mkdir(parents=True)
    path.write_text("garbage")
    with pytest.raises(MasterKeyError):
        load_keyring(_security(), runtime)
    assert path.read_text() == "garbage"


def test_add_key_version_keeps_old_keys_and_permissions(tmp_path: Path) -> None:
    runtime = _runtime("dev", tmp_path)
    old = load_keyring(_security(), runtime)
    blob = old.encrypt(PLAINTEXT, AAD)
    assert add_key_version(dev_key_file(runtime)) == 2
    new = load_keyring(_security(), runtime)
    assert new.versions == (1, 2)
    assert new.decrypt(blob, AAD) == PLAINTEXT
    assert old.decrypt(new.encrypt(PLAINTEXT, AAD), AAD) == PLAINTEXT  # via the file reloader
    assert stat.S_IMODE(dev_key_file(runtime).stat().st_mode) == 0o600


def test_prod_without_key_raises_master_key_missing(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyMissing) as info:
        load_keyring(_security(), _runtime("prod", tmp_path))
    assert "PATRIOT_MASTER_KEY" in str(info.value) and "PATRIOT_MASTER_KEY_FILE" in str(info.value)
    assert not dev_key_file(_runtime("prod", tmp_path)).exists()


def test_prod_uses_env_key_before_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"1:{encode_key(KEY_2)}")
    keyring = load_keyring(_security(f"1:{encode_key(KEY_1)}", key_file), _runtime("prod", tmp_path))
    blob = keyring.encrypt(PLAINTEXT, AAD)
    assert KeyRing({1: KEY_1}).decrypt(blob, AAD) == PLAINTEXT


def test_prod_key_file_loads_and_missing_file_is_an_error(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"1:{encode_key(KEY_1)},2:{encode_key(KEY_2)}\n")
    key_file.chmod(0o600)
    assert load_keyring(_security(master_key_file=key_file), _runtime("prod", tmp_path)).versions == (1, 2)
    with pytest.raises(MasterKeyError, match="does not exist"):
        load_keyring(_security(master_key_file=tmp_path / "missing"), _runtime("prod", tmp_path))


def test_malformed_env_key_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="PATRIOT_MASTER_KEY"):
        load_keyring(_security("1:short"), _runtime("prod", tmp_path))


def test_mask_reveals_at_most_four_and_four_characters() -> None:
    assert mask_api_key("abcdEFGHIJKLmnopqrstwxyz") == "abcd…wxyz"
    for length in range(0, 80):
        key = "".join(chr(ord("A") + i % 26) for i in range(length))
        masked = mask_api_key(key)
        revealed = masked.replace("…", "").replace("*", "")
        assert len(revealed) <= min(8, length // 2)
        if length >= 4:
            assert masked != key


def test_credentials_repr_never_shows_secrets() -> None:
    creds = ExchangeCredentials(api_key="AKIAkeyMIDDLEPARTxyz1", api_secret="topSECRETvalue123456")
    for text in (repr(creds), str(creds), f"{creds}"):
        assert "MIDDLEPART" not in text and "SECRET" not in text
