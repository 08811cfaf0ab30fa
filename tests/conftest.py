from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mirrord.demo.origin import OriginServer
from mirrord.demo.repogen import OriginTree, SigningKey
from tests.helpers import LogCapture, Mirror
from tests.mosquitto import Mosquitto
from tests.seaweed import Seaweed


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate("mirrord-test")


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate("mirrord-other")


@pytest.fixture
def keys_dir(tmp_path: Path, signing_key: SigningKey) -> Path:
    directory = tmp_path / "keys"
    signing_key.write_public(directory)
    return directory


@pytest.fixture
def origin_tree(tmp_path: Path, signing_key: SigningKey) -> OriginTree:
    return OriginTree(tmp_path / "origin", signing_key)


@pytest.fixture
async def origin(origin_tree: OriginTree) -> AsyncIterator[OriginServer]:
    origin_tree.root.mkdir(parents=True, exist_ok=True)
    async with OriginServer(origin_tree.root) as server:
        yield server


@pytest.fixture
def logs() -> LogCapture:
    return LogCapture()


@pytest.fixture
def mirror(
    tmp_path: Path, origin_tree: OriginTree, origin: OriginServer, keys_dir: Path, logs: LogCapture
) -> Mirror:
    return Mirror(tmp_path, origin_tree, origin, keys_dir, logs)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto on 127.0.0.1 (the test may stop and start it again)."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """A real SeaweedFS S3 server on 127.0.0.1, one per test module that asks for it."""
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: Seaweed, request: pytest.FixtureRequest) -> str:
    name = "t-" + str(request.node.name).replace("_", "-").lower()[:50].rstrip("-")
    seaweed.create_bucket(name)
    return name
