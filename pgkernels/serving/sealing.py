"""Sealed boxes: a client encrypts a short secret (a share seed) to one server.

X25519 with a fresh ephemeral key per box, HKDF-SHA256 for the key, AES-256-GCM
for encryption and authentication (the ``cryptography`` package). The
associated data binds a box to its context; :mod:`.client` makes it (session,
round, node, d, the hash of the masked vector, server rank) and each server
rebuilds it from its own state, so a relay cannot move a box to another
client, round, session or server, or alter the masked vector, without the box
failing to open. Used by :mod:`pgkernels.integrations.flower`: the Flower
server only relays boxes it cannot open.
"""

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"pgkernels sealed box v1"
_RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
BOX_OVERHEAD = 32 + 16  # ephemeral public key + GCM tag


class SealError(ValueError):
    """A box that does not open: wrong key, wrong context, or tampered bytes."""


def new_keypair():
    """(private key object, 32-byte raw public key)."""
    priv = X25519PrivateKey.generate()
    return priv, priv.public_key().public_bytes(**_RAW)


def _key(shared, eph_pub, pub):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + eph_pub + pub).derive(shared)


def seal(public_key, secret, aad):
    """Encrypt ``secret`` (bytes) to the holder of the raw X25519 ``public_key``."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        raise ValueError("public_key must be 32 raw X25519 bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(**_RAW)
    key = _key(eph.exchange(X25519PublicKey.from_public_bytes(bytes(public_key))), eph_pub,
               bytes(public_key))
    # the key is fresh per box, so a fixed nonce is safe
    return eph_pub + AESGCM(key).encrypt(b"\0" * 12, bytes(secret), bytes(aad))


def open_sealed(private_key, box, aad):
    """Decrypt a box made by :func:`seal`; raises :class:`SealError` if it does not open."""
    box = bytes(box) if isinstance(box, (bytes, bytearray, memoryview)) else None
    if box is None or len(box) < BOX_OVERHEAD:
        raise SealError("not a sealed box (too short or not bytes)")
    eph_pub, ct = box[:32], box[32:]
    pub = private_key.public_key().public_bytes(**_RAW)
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return AESGCM(_key(shared, eph_pub, pub)).decrypt(b"\0" * 12, ct, bytes(aad))
    except (InvalidTag, ValueError) as e:
        raise SealError("sealed box does not open (wrong key or context, or tampered)") from e
