"""Like for like: what listing an arch's keys in the bucket costs mirrord, per source tree.

``python -m benchmarks.bucketlistprobe /tmp/ab/base /tmp/ab/head [--keys 25000] [--runs 5]``
starts a private SeaweedFS (as tests/test_bucket.py does), puts ``--keys`` tiny objects under
one prefix, then, for each tree in turn and in its own process (``PYTHONPATH``), opens a
``Bucket`` and measures ``Bucket.listing`` of that prefix: what the bucket mirror pays on
every publish of an arch to compare the bucket with the snapshot. Prints CPU seconds and
microseconds a key, medians over ``--runs`` (after one unmeasured listing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.seaweed import Seaweed

BUCKET = "listprobe"
PREFIX = "alpine/edge/community/x86_64/"

MEASURE = """
import asyncio, statistics, sys, time
from pathlib import Path
from mirrord.core.config import S3Config
from mirrord.publish.bucket import Bucket, load_credentials
endpoint, credentials, prefix, runs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
config = S3Config(endpoint, "listprobe", credentials_file=credentials)

async def main() -> None:
    async with Bucket.open(config, load_credentials(config, {})) as bucket:
        keys = len(await bucket.listing(prefix))
        seconds = []
        for _ in range(runs):
            started = time.process_time()
            await bucket.listing(prefix)
            seconds.append(time.process_time() - started)
    median = statistics.median(seconds)
    print(f"{keys} keys: listing median {median:.3f} CPU-s, {median / keys * 1e6:.0f} us a key")

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (git archives)")
    parser.add_argument("--keys", type=int, default=25_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bucketlistprobe-") as scratch:
        directory = Path(scratch)
        seaweed = Seaweed(directory / "seaweed")
        seaweed.start()
        try:
            seaweed.create_bucket(BUCKET)
            _fill(seaweed, args.keys)
            credentials = seaweed.credentials_file(directory)
            for tree in args.trees:
                argv = [sys.executable, "-c", MEASURE, seaweed.endpoint, str(credentials)]
                measured = subprocess.run(
                    [*argv, PREFIX, str(args.runs)],
                    env={**os.environ, "PYTHONPATH": str(tree.resolve())},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(f"{tree.name:12} {measured.stdout.strip()}", flush=True)
        finally:
            seaweed.stop()


def _fill(seaweed: Seaweed, keys: int) -> None:
    client = seaweed.client()

    def put(number: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}pkg-{number:06d}-r0.apk", Body=b"x")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(keys)))


if __name__ == "__main__":
    main()
