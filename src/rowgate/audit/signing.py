"""Ed25519 signatures of audit checkpoints. Whoever can rewrite the store can recompute every
hash of the chain; they cannot sign the new hashes without the private key."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rowgate.errors import ConfigError


def checkpoint_message(replica: str, seq: int, covered_hash: str) -> bytes:
    return f"rowgate-audit-checkpoint:{replica}:{seq}:{covered_hash}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"audit.signing_key_file: cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"audit.signing_key_file: {path} is not a PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit.signing_key_file: {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file, or the public half of a private key file."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def generate_key_file(path: Path) -> None:
    """A new Ed25519 private key in PEM (0600), unless the file exists."""
    if path.exists():
        return
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())

    def sign(self, replica: str, seq: int, covered_hash: str) -> str:
        return base64.b64encode(self._key.sign(checkpoint_message(replica, seq, covered_hash))).decode()


def signature_valid(public: Ed25519PublicKey, replica: str, seq: int, covered_hash: str, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), checkpoint_message(replica, seq, covered_hash))
    except (InvalidSignature, ValueError):
        return False
    return True
