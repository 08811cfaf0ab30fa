"""A private mosquitto broker on 127.0.0.1, anonymous, nothing persisted: for tests."""

from __future__ import annotations

import os
from pathlib import Path

import aiomqtt

from tests.nginx import LoopbackServer, free_port, start_listening, system_binary

CONFIG = """\
{user}
listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
"""


class Mosquitto(LoopbackServer):
    """Started and stopped by the test; ``start`` again after ``stop`` reuses the port."""

    def __init__(self, prefix: Path) -> None:
        super().__init__()
        self.prefix = prefix
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.prefix / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "mosquitto.conf"
        # As root mosquitto would switch to its own user, who cannot read a test's tmp dir.
        user = "user root" if os.geteuid() == 0 else ""
        conf.write_text(CONFIG.format(user=user, port=self.port))
        argv = [system_binary("mosquitto"), "-c", str(conf)]
        with self.log.open("ab") as log:
            self._process = start_listening(argv, self.port, "mosquitto", timeout, self.log, log)

    async def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish one message with a real client (QoS 1: the broker has it on return)."""
        async with aiomqtt.Client("127.0.0.1", self.port, timeout=10) as client:
            await client.publish(topic, payload, qos=1)
