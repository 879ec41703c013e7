"""Encrypting the campaign account's password at rest, with a key kept outside the database.

The key is a Fernet key (AES-128-CBC + HMAC-SHA256) in ``CRMKIT_HOME/secret.key``, mode 0600.
The database stores only the ciphertext and the key's id; a copied database without the key
file cannot reveal the password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..errors import ConfigError

__all__ = ["SecretBox"]

KEY_FILE = "secret.key"


class SecretBox:
    """Encrypts and decrypts short secrets with the machine's key (created on first use)."""

    def __init__(self, home: Path) -> None:
        self.path = home / KEY_FILE

    def __repr__(self) -> str:
        return f"SecretBox({str(self.path)!r})"

    def _key(self, *, create: bool) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            if not create:
                return None
            key = Fernet.generate_key()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race; use its key
                return self._key(create=False)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            return key
        with os.fdopen(fd, "rb") as f:
            key = f.read().strip()
        if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            self.path.chmod(0o600)
        return key

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()[:12]

    def mac(self, label: str, message: str) -> bytes:
        """HMAC-SHA256 of ``message`` under the machine's key, separated per ``label``.

        For values that must be derivable again later but never stored (a consent link's PKCE
        verifier): whoever has the database but not the key file cannot derive them.
        """
        key = self._key(create=True)
        assert key is not None
        return hmac.new(key, f"{label}\n{message}".encode(), hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> tuple[str, str]:
        """``(ciphertext, key_id)``; the ciphertext is ASCII and safe to store."""
        key = self._key(create=True)
        assert key is not None
        return Fernet(key).encrypt(plaintext.encode()).decode("ascii"), self.key_id(key)

    def decrypt(self, ciphertext: str, key_id: str) -> str:
        """The plaintext.

        Raises:
            ConfigError: the key is missing or another one (the database came from another machine,
                or CRMKIT_HOME changed); the password must be entered again.
        """
        key = self._key(create=False)
        if key is None or self.key_id(key) != key_id:
            raise ConfigError(
                "The campaign account's password was encrypted with a key that is not on this machine "
                f"({self.path}); an administrator must enter the password again."
            )
        try:
            return Fernet(key).decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ConfigError("The stored campaign password cannot be decrypted; enter it again.") from exc
