"""MT bodies at rest: AES-GCM, so a password in a queued SMS is never plain in Redis."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ussdgw.store.model import OutboundMessage


class Sealer:
    """Seals and opens blobs with one key (16, 24 or 32 bytes); each seal has a fresh nonce."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("the secret key must be 16, 24 or 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, None)

    def open(self, blob: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], None)

    def seal_message(self, message: OutboundMessage) -> str:
        """The outbox's form of an MT: sealed JSON, hex (Lua's cjson carries it as a plain string)."""
        return self.seal(message.to_json()).hex()

    def open_message(self, blob_hex: bytes | str) -> OutboundMessage:
        raw = blob_hex.decode() if isinstance(blob_hex, bytes) else blob_hex
        return OutboundMessage.from_json(self.open(bytes.fromhex(raw)))
