"""The keys trtforge handles (Ed25519, ECDSA P-256), as plain values: ``trtforge.signing`` reads, writes and uses
them; ``compat.LoadPolicy`` holds the trusted ones, and ``build`` decides whether it signs, without
importing any signing code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey | EllipticCurvePrivateKey
    key_id: str
    source: str
    #: what a command that signs with it says first (a key file other users may read), or None
    warning: str | None = None

    def public_half(self) -> TrustedKey:
        """The key that verifies its signatures: a run that signs trusts what it signs itself."""
        return TrustedKey(self.private_key.public_key(), self.key_id, self.source)


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signatures count (``trtforge.signing.load_trusted_keys`` reads them)."""

    public_key: Ed25519PublicKey | EllipticCurvePublicKey
    key_id: str
    source: str


SIGNING_KEY_ENV = "TRTFORGE_SIGNING_KEY"
TRUSTED_KEY_ENV = "TRTFORGE_TRUSTED_KEY"


def signing_requested(path: Path | None) -> bool:
    """Whether ``build`` signs: ``--sign-key`` given or ``$TRTFORGE_SIGNING_KEY`` set. Decided here,
    without ``trtforge.signing`` and cryptography: a build that signs nothing imports neither."""
    return path is not None or bool(os.environ.get(SIGNING_KEY_ENV))
