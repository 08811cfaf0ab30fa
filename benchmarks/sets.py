"""The named data sets of a run, built on first use from the sizes in force."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.data import (
    DataSet,
    Delta,
    RealPackage,
    build_set,
    large_specs,
    load_key,
    plan_delta,
    read_real_index,
    sampled_specs,
    small_heavy_specs,
    tiny_specs,
)
from benchmarks.settings import Sizes
from mirrord.alpine.apkindex import NOARCH
from mirrord.demo.repogen import PackageSpec, SigningKey

# one salt per set, so no two sets share package contents
_RELEASE, _DELTA, _SMALL_HEAVY, _LARGE, _UNCHANGED, _TINY, _WAN = 1, 2, 3, 4, 5, 6, 7


@dataclass
class DataSets:
    cache: Path
    sizes: Sizes
    progress: Callable[[str], None]
    _key: SigningKey | None = None
    _real: list[RealPackage] | None = None
    _built: dict[str, DataSet] = field(default_factory=dict)

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = load_key(self.cache)
        return self._key

    def public_keys(self) -> Path:
        """A directory holding just the public key, for mirrord's ``origin.keys``."""
        directory = self.cache / "keys"
        if not (directory / self.key.name).exists():
            self.key.write_public(directory)
        return directory

    @property
    def real(self) -> list[RealPackage]:
        if self._real is None:
            self._real = read_real_index()
        return self._real

    def built(self, name: str, specs: list[PackageSpec]) -> DataSet:
        """Any recipe, built once (by name and content)."""
        return self._build(name, specs)

    def _build(self, name: str, specs: list[PackageSpec]) -> DataSet:
        if name not in self._built:
            self._built[name] = build_set(self.cache, name, specs, self.key, self.progress)
        return self._built[name]

    def release(self) -> DataSet:
        s = self.sizes
        return self._build(
            "release",
            sampled_specs(self.real, s.release, max_size=s.release_max_size, salt=_RELEASE),
        )

    def wan(self) -> DataSet:
        """Like the release set (the real size distribution), small enough for a slow link."""
        s = self.sizes
        return self._build(
            "wan", sampled_specs(self.real, s.wan_packages, max_size=s.wan_max_size, salt=_WAN)
        )

    def delta(self) -> tuple[Delta, DataSet]:
        s = self.sizes
        base = [p.spec for p in self.release().packages]
        delta = plan_delta(
            base, self.real, added=s.added, rebuilt=s.rebuilt, removed=s.removed, salt=_DELTA
        )
        return delta, self._build("release-delta", [*delta.rebuilt, *delta.added])

    def small_heavy(self) -> DataSet:
        s = self.sizes
        specs = small_heavy_specs(
            self.real,
            s.small_heavy,
            fraction=s.small_heavy_fraction,
            max_size=s.small_heavy_max_size,
            salt=_SMALL_HEAVY,
        )
        return self._build("small-heavy", specs)

    def large(self) -> DataSet:
        s = self.sizes
        return self._build(
            "large", large_specs(self.real, s.large_files, s.large_file_bytes, salt=_LARGE)
        )

    def unchanged(self) -> DataSet:
        s = self.sizes
        count = s.unchanged_repos * s.unchanged_arches * s.unchanged_packages
        # Listed by every arch's index: built for none (mirrord refuses another arch's).
        specs = [
            replace(spec, arch=NOARCH)
            for spec in tiny_specs(self.real, count, 200, salt=_UNCHANGED)
        ]
        return self._build("unchanged", specs)

    def tiny(self) -> DataSet:
        """The small packages behind the publish and memory scenarios."""
        s = self.sizes
        count = max(s.memory_packages, *s.publish_arch_sizes)
        return self._build("tiny", tiny_specs(self.real, count, s.tiny_payload, salt=_TINY))
