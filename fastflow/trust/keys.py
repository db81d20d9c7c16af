"""Signing and verifying keys of signed events (docs/provenance.md).

Two algorithms, as the CloudEvents verifiability extension's deployments
use them: Ed25519 and ECDSA over NIST P-256 with SHA-256 (the extension's
test vectors).  Both are OpenSSL's, through ``cryptography``; a key is
loaded once and its object kept (loading a public key costs more than a
verification).

ECDSA signatures are written as the raw concatenation of ``r`` and ``s``
(64 bytes, the extension's test vectors) and signed deterministically
(RFC 6979), so the same event signed twice gives the same material; a
verifier also takes DER signatures (other DSSE implementations write them).

A key id (the DSSE ``keyid``) is a name the two sides agree on: given by
the operator, or by default the SHA-256 of the public key's
SubjectPublicKeyInfo (DER), in hex.
"""

import base64
import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = ("KeySet", "PublicKey", "SigningKey", "load_key_file")

ED25519 = "ed25519"
P256 = "p256"
ALGORITHMS = (ED25519, P256)

_ECDSA = ec.ECDSA(hashes.SHA256())
_ECDSA_DET = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_MAX_KEY_FILE = 64 * 1024


def _spki(pub):
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _alg_of(key):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ED25519
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) \
            and isinstance(key.curve, ec.SECP256R1):
        return P256
    raise ValueError("unsupported key: {} (fastflow signs with Ed25519 or ECDSA P-256)".format(
        type(key).__name__))


def _check_keyid(keyid):
    if not isinstance(keyid, str) or not keyid or len(keyid) > 256 \
            or any(c in keyid for c in "\r\n\0"):
        raise ValueError("a key id is a non-empty str of at most 256 characters without "
                         "CR, LF or NUL, got {!r}".format(keyid))
    return keyid


class PublicKey:
    """A verifying key: ``alg`` (``ed25519`` or ``p256``), ``keyid``."""

    __slots__ = ("alg", "keyid", "_key")

    def __init__(self, key, keyid=None):
        self.alg = _alg_of(key)
        self._key = key
        self.keyid = _check_keyid(keyid) if keyid is not None else hashlib.sha256(
            _spki(key)).hexdigest()

    @classmethod
    def from_pem(cls, pem, keyid=None):
        """A public key from PEM (SubjectPublicKeyInfo) bytes or str."""
        if isinstance(pem, str):
            pem = pem.encode()
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ValueError("not a PEM public key: {}".format(exc)) from None
        return cls(key, keyid)

    @classmethod
    def from_raw_ed25519(cls, raw, keyid=None):
        """An Ed25519 public key from its 32 raw bytes (or their Base64)."""
        if isinstance(raw, str):
            raw = base64.b64decode(raw, validate=True)
        return cls(ed25519.Ed25519PublicKey.from_public_bytes(raw), keyid)

    @classmethod
    def from_p256_point(cls, x, y, keyid=None):
        """A P-256 public key from its point's coordinates."""
        return cls(ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key(), keyid)

    def pem(self):
        return self._key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, sig, message):
        """True if ``sig`` signs ``message`` (never raises on a bad one)."""
        try:
            if self.alg == ED25519:
                self._key.verify(sig, message)
            else:
                if len(sig) == 64:
                    sig = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                               int.from_bytes(sig[32:], "big"))
                self._key.verify(sig, message, _ECDSA)
            return True
        except (InvalidSignature, ValueError):
            return False

    def __repr__(self):
        return "PublicKey({}, keyid={!r})".format(self.alg, self.keyid)


class SigningKey:
    """A private key that signs events: ``alg``, ``keyid``, ``public``."""

    __slots__ = ("alg", "keyid", "public", "_key")

    def __init__(self, key, keyid=None):
        self.alg = _alg_of(key)
        self._key = key
        self.public = PublicKey(key.public_key(), keyid)
        self.keyid = self.public.keyid

    @classmethod
    def generate(cls, alg=ED25519, keyid=None):
        if alg == ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate(), keyid)
        if alg == P256:
            return cls(ec.generate_private_key(ec.SECP256R1()), keyid)
        raise ValueError("alg must be one of {}, got {!r}".format(", ".join(ALGORITHMS), alg))

    @classmethod
    def from_pem(cls, pem, keyid=None, password=None):
        """A private key from PEM (PKCS#8 or the algorithm's own) bytes or str."""
        if isinstance(pem, str):
            pem = pem.encode()
        try:
            key = serialization.load_pem_private_key(pem, password)
        except (ValueError, TypeError) as exc:
            raise ValueError("not a PEM private key: {}".format(exc)) from None
        return cls(key, keyid)

    @classmethod
    def from_p256_secret(cls, d, keyid=None):
        return cls(ec.derive_private_key(d, ec.SECP256R1()), keyid)

    def pem(self):
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def sign(self, message):
        """The signature of ``message`` (Ed25519: 64 bytes; P-256: r || s)."""
        if self.alg == ED25519:
            return self._key.sign(message)
        r, s = decode_dss_signature(self._key.sign(message, _ECDSA_DET))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def save(self, path):
        """Write ``path`` (the private key, mode 0600) and ``path.pub``."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.pem())
        with open(str(path) + ".pub", "wb") as f:
            f.write(self.public.pem())

    def __repr__(self):
        return "SigningKey({}, keyid={!r})".format(self.alg, self.keyid)


def _read_small(path):
    with open(path, "rb") as f:
        data = f.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise ValueError("{}: larger than {} bytes: not a key file".format(path, _MAX_KEY_FILE))
    return data


def load_key_file(path, keyid=None):
    """A SigningKey or a PublicKey from a PEM file (which one: what it holds)."""
    data = _read_small(path)
    if b"PRIVATE KEY" in data:
        return SigningKey.from_pem(data, keyid)
    try:
        return PublicKey.from_pem(data, keyid)
    except ValueError as exc:
        raise ValueError("{}: {}".format(path, exc)) from None


class KeySet:
    """The keys a verifier accepts, by key id.  Built from PublicKeys,
    SigningKeys (their public halves), PEM file paths, or a dict of
    ``keyid: key or path``."""

    __slots__ = ("_by_id",)

    def __init__(self, keys=()):
        self._by_id = {}
        if isinstance(keys, dict):
            for kid, k in keys.items():
                self.add(k, kid)
        else:
            for k in keys:
                self.add(k)

    def add(self, key, keyid=None):
        if isinstance(key, (str, os.PathLike)):
            key = load_key_file(key, keyid)
        if isinstance(key, SigningKey):
            key = key.public
        if not isinstance(key, PublicKey):
            raise TypeError("a key is a PublicKey, a SigningKey or a PEM file path, "
                            "not {}".format(type(key).__name__))
        if keyid is not None and keyid != key.keyid:
            key = PublicKey(key._key, keyid)
        self._by_id[key.keyid] = key
        return key

    def get(self, keyid):
        return self._by_id.get(keyid)

    def __contains__(self, keyid):
        return keyid in self._by_id

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self):
        return len(self._by_id)

    def ids(self):
        return list(self._by_id)

    def __repr__(self):
        return "KeySet({})".format(", ".join(self._by_id))
