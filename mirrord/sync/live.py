"""The configuration in force, with its trusted keys: one owner, replaced whole on reload."""

from __future__ import annotations

from dataclasses import dataclass

from mirrord.alpine.signing import Keyring
from mirrord.core.config import Config


@dataclass
class LiveConfig:
    """Shared by reference: whoever reads ``config`` after a reload sees the new one."""

    config: Config
    keyring: Keyring

    def replace(self, config: Config, keyring: Keyring) -> None:
        self.config = config
        self.keyring = keyring
