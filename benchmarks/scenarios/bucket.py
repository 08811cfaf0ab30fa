"""Scenario: publishing an arch into an S3 bucket, mirrord against ``rclone sync``.

mirrord's tree is primed (one unmeasured sync of the release set); then, on
a real SeaweedFS (``weed server -s3``) on 127.0.0.1, alternating runs into
fresh buckets: ``mirrord sync`` with ``s3:`` set (the tree is current, so the
pass is the bucket's: upload, verify by HEAD, index last) against ``rclone
sync`` of the same published directory, what an operator would script
today; then each again with nothing changed (mirrord lists the bucket and
hashes every file once, as at every start; rclone compares size and mtime).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from benchmarks import measure, mirrordrun, results
from benchmarks.context import Bench
from benchmarks.results import GoalCheck, ScenarioResult, Table
from benchmarks.scenarios.common import MAIN
from benchmarks.servers import LoggedNginx
from benchmarks.trees import LiveOrigin, warm
from tests.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed

PART = "16M"
CUTOFF = "64M"
TRANSFERS = 8


def rclone_env(seaweed: Seaweed) -> dict[str, str]:
    """An rclone remote named ``sw`` from the environment (no config file)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    return {
        **inherited,
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_SW_TYPE": "s3",
        "RCLONE_CONFIG_SW_PROVIDER": "Other",
        "RCLONE_CONFIG_SW_ENDPOINT": seaweed.endpoint,
        "RCLONE_CONFIG_SW_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": SECRET_KEY,
        "RCLONE_CONFIG_SW_FORCE_PATH_STYLE": "true",
    }


def rclone_argv(source: Path, bucket: str) -> list[str]:
    return [
        "rclone",
        "sync",
        str(source),
        f"sw:{bucket}/alpine/{MAIN}",
        f"--transfers={TRANSFERS}",
        f"--checkers={TRANSFERS}",
        f"--s3-upload-cutoff={CUTOFF}",
        f"--s3-chunk-size={PART}",
    ]


def bucket(bench: Bench) -> ScenarioResult:
    packages = bench.sets.release().packages
    directory = bench.scenario_dir("bucket")
    logs = directory / "logs"
    logs.mkdir(parents=True)
    origin = LiveOrigin(directory / "origin", bench.sets.key)
    origin.publish({MAIN: packages})
    warm(origin.root)
    total = sum(p.size for p in packages)
    has_rclone = shutil.which("rclone") is not None
    figures: dict[str, dict[str, list[float]]] = {
        "mirrord": {"first": [], "first_cpu": [], "again": [], "again_cpu": []},
        "rclone": {"first": [], "first_cpu": [], "again": [], "again_cpu": []},
    }
    commands: list[str] = []
    seaweed = Seaweed(directory / "seaweed")
    seaweed.start()
    try:
        with LoggedNginx(origin.root, directory / "nginx", workers=2) as nginx:
            base = mirrordrun.MirrordSetup(
                origin_url=nginx.url,
                keys=bench.sets.public_keys(),
                arches=(MAIN,),
                directory=directory / "mirrord",
                fetch=mirrordrun.default_fetch(bench.sizes.fetch_concurrency),
            )
            mirrordrun.sync(base, logs, "prime")
            source = base.published.joinpath(*MAIN.parts)
            for rep in range(bench.runs):
                name = f"mirrord-{rep}"
                seaweed.create_bucket(name)
                setup = base.with_s3(
                    {
                        "endpoint": seaweed.endpoint,
                        "bucket": name,
                        "prefix": "alpine",
                        "credentials_file": str(seaweed.credentials_file(logs)),
                        "concurrency": TRANSFERS,
                        "multipart_threshold": CUTOFF.replace("M", "MiB"),
                        "part_size": PART.replace("M", "MiB"),
                    }
                )
                for phase in ("first", "again"):
                    run = mirrordrun.sync(setup, logs, f"{name}-{phase}")
                    figures["mirrord"][phase].append(run.usage.wall)
                    figures["mirrord"][f"{phase}_cpu"].append(run.usage.cpu)
                    commands.append(run.command)
                if not has_rclone:
                    continue
                name = f"rclone-{rep}"
                seaweed.create_bucket(name)
                argv = rclone_argv(source, name)
                for phase in ("first", "again"):
                    tag = f"{name}-{phase}"
                    usage = measure.run(
                        argv,
                        stdout=logs / f"{tag}.out",
                        stderr=logs / f"{tag}.err",
                        env=rclone_env(seaweed),
                    )
                    if usage.returncode != 0:
                        raise RuntimeError(f"rclone exited {usage.returncode} ({tag})")
                    figures["rclone"][phase].append(usage.wall)
                    figures["rclone"][f"{phase}_cpu"].append(usage.cpu)
                commands.append(shlex.join(argv))
    finally:
        seaweed.stop()

    def med(tool: str, figure: str) -> float:
        return results.median(figures[tool][figure])

    def cell(tool: str, figure: str) -> str:
        if tool == "rclone" and not has_rclone:
            return results.NOT_INSTALLED
        return results.fmt(med(tool, figure))

    def versus(figure: str) -> str:
        if not has_rclone:
            return results.MISSING
        return results.ratio(med("rclone", figure), med("mirrord", figure))

    rows = []
    for label, figure in (
        ("first upload: wall s", "first"),
        ("first upload: CPU s", "first_cpu"),
        ("nothing changed: wall s", "again"),
        ("nothing changed: CPU s", "again_cpu"),
    ):
        rows.append(
            (
                label,
                cell("mirrord", figure),
                cell("rclone", figure),
                versus(figure),
            )
        )
    first = med("mirrord", "first")
    rate = results.megabytes(total) / first if first > 0 else 0.0
    return ScenarioResult(
        "bucket",
        "Publishing into an S3 bucket (SeaweedFS on loopback)",
        f"{len(packages):,} packages ({results.megabytes(total):,.0f} MB), one arch, into fresh "
        f"buckets of a real SeaweedFS on 127.0.0.1; {TRANSFERS} uploads at once on both "
        f"sides, multipart from {CUTOFF} in {PART} parts; one object is written to and "
        "deleted from each bucket first (SeaweedFS grows a new bucket's volumes on its first "
        "writes, ~1 s). "
        "mirrord's figures are a whole `mirrord sync` process whose tree is current: list, "
        "hash, upload with Content-MD5, HEAD to verify, index last. rclone uploads in no "
        "particular order (an index can go up before the files it lists).",
        tables=(
            Table(
                ("", "mirrord", "rclone sync", "rclone / mirrord"),
                tuple(rows),
                caption=f"medians of {bench.runs} alternating runs; "
                f"mirrord's first upload ran at {rate:,.0f} MB/s",
            ),
        ),
        commands=tuple(dict.fromkeys(commands)),
        goals=(
            GoalCheck(
                "the bucket costs no more than rclone sync of the tree (first upload, wall)",
                versus("first"),
                (med("mirrord", "first") <= med("rclone", "first") * 1.1) if has_rclone else None,
            ),
        ),
        figures={
            tool: {k: results.median(v) for k, v in values.items()}
            for tool, values in figures.items()
            if tool == "mirrord" or has_rclone
        },
    )
