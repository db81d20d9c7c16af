"""Provenance: signed events (the CloudEvents verifiability extension over
DSSE), keys, and the trust policy the doors apply (docs/provenance.md)."""

from fastflow.errors import SignatureError
from fastflow.trust.events import MODES, PAYLOAD_TYPE, check, digest, sign, verify
from fastflow.trust.keys import KeySet, PublicKey, SigningKey, load_key_file
from fastflow.trust.policy import TrustPolicy, TrustRule

__all__ = ("KeySet", "MODES", "PAYLOAD_TYPE", "PublicKey", "SignatureError", "SigningKey",
           "TrustPolicy", "TrustRule", "check", "digest", "load_key_file", "sign",
           "verify")
