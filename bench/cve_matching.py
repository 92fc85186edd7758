"""CVE matching at fleet scale: a full recompute and per-host check-in updates, in-process.

    .venv/bin/python bench/cve_matching.py [--hosts 100000] [--packages 2000] [--records 150000]

Generates a full-size world first (not timed): tracker records for Debian 11,
12 and 13 over ~30k source packages (linux and the browsers with thousands of
CVEs, a long tail with one or two; fixed, not affected, open with and without
nodsa, undetermined; urgencies; epochs, ``~`` and ``+debNNuK`` versions), an
OSV copy of a tenth of them and a few changelog fixes the tracker lacks; a few
hundred base images of PACKAGES binary packages each, installed at a few
update waves; hosts drawn from them, a share (``--unique``) with their own
extra or held-back packages; each host running a kernel (some not rebooted
since an upgrade) and tens of libraries, with levels published for many
kernel and library builds, applied in every process, some processes, or none,
and some libraries replaced on disk under running processes.

Then it prints: the index build; the full recompute (hosts in digest order,
as the server reads them) with its rate and memory; the CPU of one host's
check-in update (median, p99), alone and with its changed findings, for four
kinds of check-in: unchanged; levels applied and processes restarted; upgraded
to a package list no host had (parsed fresh, as from a check-in body); upgraded
to a list other hosts have; and, in the same run, the per-host cost with nothing
shared between hosts (every cache cleared before each host) against the
memoized one.
Digests stand for the server's stored package-list digests (image, wave and
variation), since hashing 2,000 packages per host is the agent's and the
server's work at upload, not matching's.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nonstop.cve import counts
from nonstop.cve.fleet import Fleet
from nonstop.cve.index import AdvisoryIndex
from nonstop.cve.levels import library_target
from nonstop.cve.matching import Matcher
from nonstop.cve.model import (
    Advisory,
    FeedState,
    HostState,
    InstalledPackage,
    LivePatchLevel,
    ProcessRef,
    RunningKernel,
    RunningLibrary,
)
from nonstop.cve.versions import debian_version

RELEASES = {"debian:11": "11", "debian:12": "12", "debian:13": "13"}
URGENCIES = ("unimportant", "low", "medium", "high", None)
URGENCY_WEIGHTS = (20, 30, 30, 12, 8)
BIG_SOURCES = {"linux": 5200, "chromium": 1700, "firefox-esr": 800, "thunderbird": 600}


@dataclass
class Source:
    name: str
    popularity: float
    binaries: tuple[tuple[str, bool], ...]
    """(binary name, is a shared library)."""
    versions: dict[str, list[str]]
    """Release -> its versions, oldest first (the release's own, then its updates)."""
    cves: list[str]


def source_versions(rng: random.Random, name: str, release: str) -> list[str]:
    """A release's version history of one source: dpkg order, as Debian numbers them."""
    if name == "linux":
        start = {"11": (5, 10, 120), "12": (6, 1, 20), "13": (6, 12, 10)}[release]
        return [f"{start[0]}.{start[1]}.{start[2] + 3 * i}-1" for i in range(60)]
    epoch = "1:" if rng.random() < 0.1 else ""
    upstream = f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
    if rng.random() < 0.15:
        upstream += "+dfsg"
    updates = min(40, int(rng.expovariate(0.5)))
    base = f"{epoch}{upstream}-{rng.randint(1, 6)}"
    if rng.random() < 0.2:  # new upstream releases backported: 3.0.15-1~deb12u1
        major, minor, patch = upstream.split("+")[0].split(".")
        return [base] + [
            f"{epoch}{major}.{minor}.{int(patch) + i}-1~deb{release}u1"
            for i in range(1, updates + 1)
        ]
    return [base] + [f"{base}+deb{release}u{i}" for i in range(1, updates + 1)]


def generate_sources(rng: random.Random, count: int, records: int) -> list[Source]:
    """COUNT sources; those with advisories have about RECORDS package/CVE/release records."""
    sources = []
    cve_number = 10000
    with_advisories = int(count * 0.75)
    tail_budget = records / len(RELEASES) - sum(BIG_SOURCES.values())
    weights = [1 / (i + 1) ** 0.8 for i in range(with_advisories)]
    scale = (tail_budget - with_advisories) / sum(weights)  # each has one, the rest by weight
    for i in range(count):
        name = list(BIG_SOURCES)[i] if i < len(BIG_SOURCES) else f"src{i:05d}"
        n_cves = BIG_SOURCES.get(name) or (
            1 + int(scale * weights[i] + rng.random()) if i < with_advisories else 0
        )
        cves = []
        for _ in range(n_cves):
            cves.append(f"CVE-{rng.randint(2014, 2025)}-{cve_number}")
            cve_number += 1
        libraries = rng.random() < 0.5
        binaries = tuple(
            (f"lib{name}{k}" if libraries and k < 2 else f"{name}-bin{k}", libraries and k < 2)
            for k in range(rng.choice((1, 1, 2, 2, 3, 4, 6)))
        )
        versions = {r: source_versions(rng, name, r) for r in RELEASES.values()}
        popularity = 1 / (i + 1) ** 0.6
        sources.append(Source(name, popularity, binaries, versions, cves))
    return sources


def generate_advisories(rng: random.Random, sources: list[Source]) -> list[Advisory]:
    advisories = []
    for source in sources:
        for release, number in RELEASES.items():
            versions = source.versions[number]
            older = f"0.{rng.randint(1, 9)}-1"  # fixed before the release was made
            for cve in source.cves:
                urgency = rng.choices(URGENCIES, URGENCY_WEIGHTS)[0]
                roll = rng.random()
                fixed = None
                nodsa = None
                if roll < 0.72:
                    state = FeedState.FIXED
                    place = rng.random()
                    fixed = (
                        older
                        if place < 0.35
                        else versions[0]
                        if place < 0.5 or len(versions) == 1
                        else rng.choice(versions[1:])
                    )
                elif roll < 0.87:
                    state = FeedState.NOT_AFFECTED
                elif roll < 0.99:
                    state = FeedState.OPEN
                    if rng.random() < 0.6:
                        nodsa = "Minor issue; can be fixed in a point release"
                else:
                    state = FeedState.UNDETERMINED
                advisories.append(
                    Advisory(
                        cve, source.name, release, state, fixed, urgency,
                        nodsa=nodsa, feed="debian-tracker",
                    )
                )  # fmt: skip
    osv = [
        Advisory(a.cve, a.source, a.release, a.state, a.fixed_version, cvss=7.5, feed="osv")
        for a in rng.sample(advisories, len(advisories) // 10)
    ]
    newest = {(s.name, r): s.versions[n][-1] for s in sources for r, n in RELEASES.items()}
    changelog = [
        Advisory(
            a.cve, a.source, a.release, FeedState.FIXED, newest[(a.source, a.release)],
            feed="changelog",
        )
        for a in advisories
        if a.state is FeedState.OPEN and rng.random() < 0.01
    ]  # fmt: skip
    return advisories + osv + changelog


def build_id(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def kernel_target(release: str, index: int) -> str:
    return f"kernel:{release}-{index}-amd64:{build_id('linux', release, index)}"


def fixes_after(source: Source, release: str, index: int, advisories: dict) -> list[list[str]]:
    """The CVEs each later version of SOURCE fixes, from version INDEX on."""
    by_version: dict[str, list[str]] = {}
    for cve, fixed in advisories.get((release, source.name), ()):
        by_version.setdefault(fixed, []).append(cve)
    versions = source.versions[RELEASES[release]]
    return [by_version.get(v, []) for v in versions[index + 1 :]]


def generate_levels(
    rng: random.Random, sources: list[Source], advisories: list[Advisory]
) -> list[LivePatchLevel]:
    """Cumulative levels (each listing only its new CVEs) for kernel builds and, for the
    covered library sources, each library build: level N closes the next N updates' CVEs."""
    fixed: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for a in advisories:
        if a.feed == "debian-tracker" and a.fixed_version:
            fixed.setdefault((a.release, a.source), []).append((a.cve, a.fixed_version))
    levels = []
    covered = [s for s in sources if any(lib for _, lib in s.binaries)][:400]
    for release in RELEASES:
        linux = sources[0]
        for index in range(len(linux.versions[RELEASES[release]])):
            steps = fixes_after(linux, release, index, fixed)[:4]
            levels += numbered(kernel_target(release, index), steps, "linux")
        for source in covered:
            for index in range(len(source.versions[RELEASES[release]])):
                steps = fixes_after(source, release, index, fixed)[:3]
                for binary, library in source.binaries:
                    if library:
                        target = library_target(build_id(binary, release, index))
                        levels += numbered(target, steps, source.name)
    return levels


def numbered(target: str, steps: list[list[str]], source: str) -> list[LivePatchLevel]:
    return [
        LivePatchLevel(target, n, frozenset(cves), f"{n:064x}", f"+nonstop{n}", source)
        for n, cves in enumerate(steps, 1)
        if cves
    ]


@dataclass
class Image:
    release: str
    sources: list[Source]
    waves: list[tuple[InstalledPackage, ...]]
    """The package list at each update wave, oldest first."""
    wave_index: list[dict[str, int]]
    """Per wave: source -> installed version index."""


def generate_images(
    rng: random.Random, sources: list[Source], count: int, packages: int, pool: dict
) -> list[Image]:
    images = []
    popular = sources[1:]
    cumulative = list(itertools.accumulate(s.popularity for s in popular))
    for _ in range(count):
        number = rng.choices(list(RELEASES.values()), (25, 60, 15))[0]
        chosen: dict[str, Source] = {"linux": sources[0]}
        size = 3
        while size < packages:
            source = rng.choices(popular, cum_weights=cumulative)[0]
            if source.name not in chosen:
                chosen[source.name] = source
                size += len(source.binaries)
        waves = []
        wave_index = []
        for wave in range(6):
            progress = 0.5 + wave * 0.1  # waves bring each source closer to its newest update
            index = {
                s.name: min(len(s.versions[number]) - 1, int(progress * len(s.versions[number])))
                for s in chosen.values()
            }
            waves.append(package_list(chosen.values(), number, index, pool)[:packages])
            wave_index.append(index)
        images.append(Image(f"debian:{number}", list(chosen.values()), waves, wave_index))
    return images


def package_list(sources, number: str, index: dict[str, int], pool: dict) -> tuple:
    packages = []
    for source in sources:
        version = source.versions[number][index[source.name]]
        if source.name == "linux":
            names = (f"linux-image-{number}-amd64", "linux-image-amd64", "linux-libc-dev")
            origins = ("linux-signed-amd64", "linux-signed-amd64", "linux")
            for name, origin in zip(names, origins, strict=True):
                packages.append(installed(pool, name, version, origin))
            continue
        for binary, _ in source.binaries:
            packages.append(installed(pool, binary, version, source.name))
    return tuple(packages)


def installed(pool: dict, name: str, version: str, source: str) -> InstalledPackage:
    key = (name, version, source)
    package = pool.get(key)
    if package is None:
        package = pool[key] = InstalledPackage(name, version, source, version)
    return package


@dataclass
class World:
    advisories: list[Advisory]
    levels: list[LivePatchLevel]
    images: list[Image]
    published: set[str]


def host_state(
    rng: random.Random, world: World, host_id: int, unique: float
) -> tuple[HostState, str]:
    image_number = min(int(rng.paretovariate(1.1)) - 1, len(world.images) - 1)
    image = world.images[image_number]
    wave = rng.choices(range(6), (3, 5, 8, 12, 30, 42))[0]
    packages = image.waves[wave]
    digest = f"{image_number}/{wave}"
    if rng.random() < unique:  # held-back and extra packages: this host's own list
        held = set(rng.sample(range(len(packages)), 3))
        oldest = image.waves[0]  # same sources in the same order, older versions
        local = InstalledPackage(f"tool-{host_id}", "1.0-1", f"tool-{host_id}", "1.0-1")
        packages = (
            *(oldest[i] if i in held else p for i, p in enumerate(packages)),
            local,
        )
        digest += f"/{host_id}"
    return make_state(rng, world, image, wave, packages, host_id), digest


def make_state(rng, world, image, wave, packages, host_id) -> HostState:
    number = image.release.split(":")[1]
    index = image.wave_index[wave]
    processes = [ProcessRef(300 + 17 * k, f"svc{k}") for k in range(60)]
    libraries = []
    library_sources = [s for s in image.sources if any(lib for _, lib in s.binaries)]
    for source in rng.sample(library_sources, min(30, len(library_sources))):
        installed_index = index[source.name]
        deleted = installed_index > 0 and rng.random() < 0.05
        running_index = installed_index - 1 if deleted else installed_index
        version = source.versions[number][running_index]
        for binary, library in source.binaries:
            if not library:
                continue
            target = library_target(build_id(binary, image.release, running_index))
            mapped = tuple(rng.sample(processes, rng.randint(1, 8)))
            level = None
            unpatched: tuple[ProcessRef, ...] = ()
            roll = rng.random()
            if target in world.published and roll < 0.85:
                level = rng.randint(1, 3)
                if roll > 0.7:  # some processes not patched yet (started before, being retried)
                    unpatched = mapped[: max(1, len(mapped) // 3)]
            libraries.append(
                RunningLibrary(
                    build_id(binary, image.release, running_index),
                    f"{binary}.so.1",
                    binary,
                    version,
                    deleted=deleted,
                    applied_level=None if unpatched else level,
                    partial_level=level if unpatched else None,
                    processes=mapped,
                    unpatched=unpatched,
                )
            )
    linux = index["linux"]
    running = linux if rng.random() < 0.7 else max(0, linux - rng.randint(1, 6))
    applied = rng.choices((None, 1, 2, 3, 4), (10, 10, 15, 25, 40))[0]
    kernel = RunningKernel(
        f"{number}-{running}-amd64",
        image.sources[0].versions[number][running],
        kernel_target(image.release, running),
        applied,
    )
    return HostState(
        f"host-{host_id}", f"h{host_id}", image.release, packages, tuple(libraries), kernel
    )


def make_world(args: argparse.Namespace) -> tuple[World, list[tuple[HostState, str]]]:
    rng = random.Random(args.seed)
    sources = generate_sources(rng, args.sources, args.records)
    advisories = generate_advisories(rng, sources)
    levels = generate_levels(rng, sources, advisories)
    pool: dict = {}
    images = generate_images(rng, sources, args.images, args.packages, pool)
    world = World(advisories, levels, images, {level.target_key for level in levels})
    hosts = [host_state(rng, world, n, args.unique) for n in range(args.hosts)]
    return world, hosts


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_mb() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def checkin_variants(rng, world, hosts, sample: int) -> dict[str, list[tuple[HostState, str]]]:
    """Check-ins of SAMPLE hosts, in this order: unchanged; every process and the kernel now
    patched; upgraded to the next wave plus a package of its own, a list no host had (it builds
    a package set); back to the next wave's list, which other hosts have."""
    chosen = rng.sample(hosts, sample)
    variants: dict[str, list[tuple[HostState, str]]] = {
        "unchanged": [],
        "running changed": [],
        "new package list": [],
        "known package list": [],
    }
    for state, digest in chosen:
        variants["unchanged"].append((state, digest))
        libraries = tuple(  # every process now patched
            replace(
                lib,
                applied_level=lib.partial_level or lib.applied_level,
                partial_level=None,
                unpatched=(),
            )
            for lib in state.libraries
        )
        kernel = state.kernel
        assert kernel is not None
        restarted = replace(state, libraries=libraries, kernel=replace(kernel, applied_level=4))
        variants["running changed"].append((restarted, digest))
        # Upgraded to the next wave: the list other hosts of its image already have; or that
        # plus a package of its own, a list no host had.
        image, wave = (int(part) for part in digest.split("/")[:2])
        wave = min(wave + 1, len(world.images[image].waves) - 1)
        newer = world.images[image].waves[wave]
        variants["known package list"].append((replace(state, packages=newer), f"{image}/{wave}"))
        extra = InstalledPackage(f"hotfix-{state.host_id}", "1.0-1", "src00010", "1.0-1")
        variants["new package list"].append(
            (replace(state, packages=(*newer, extra)), f"{image}/{wave}/{state.host_id}-hotfix")
        )
    return variants


def report_world(world: World, hosts: list[tuple[HostState, str]], seconds: float) -> None:
    tracker = sum(1 for a in world.advisories if a.feed == "debian-tracker")
    distinct = len({digest for _, digest in hosts})
    libraries = sum(len(state.libraries) for state, _ in hosts) / len(hosts)
    packages = len(hosts[0][0].packages)
    print(
        f"world: {tracker} tracker records + {len(world.advisories) - tracker} OSV/changelog, "
        f"{len(world.levels)} published levels, {len(world.images)} images; {len(hosts)} hosts "
        f"x {packages} packages ({distinct} distinct lists), {libraries:.0f} mapped libraries "
        f"per host; generated in {seconds:.0f} s"
    )


def received(state: HostState) -> HostState:
    """STATE as the server has it at a check-in: its package list just parsed from the body
    (fresh objects, as warm in the CPU caches as a parse leaves them)."""
    fields = ("name", "version", "source", "source_version", "arch")
    body = json.dumps([[getattr(p, field) for field in fields] for p in state.packages])
    return replace(state, packages=tuple(InstalledPackage(*row) for row in json.loads(body)))


def measure_checkins(fleet: Fleet, name: str, checkins: list[tuple[HostState, str]]) -> None:
    """CPU per check-in: the update (assessment and counts), then with the changed findings."""
    update, changes = [], []
    for sent, digest in checkins:
        state = received(sent) if name == "new package list" else sent
        begin = time.thread_time_ns()
        change = fleet.checkin(state, digest)
        middle = time.thread_time_ns()
        change.findings()
        update.append((middle - begin) / 1e6)
        changes.append((time.thread_time_ns() - begin) / 1e6)
    print(
        f"check-in, {name} ({len(checkins)} hosts): CPU median {statistics.median(update):.3f} "
        f"ms, p99 {percentile(update, 0.99):.3f} ms; with the changed findings: median "
        f"{statistics.median(changes):.3f} ms, p99 {percentile(changes, 0.99):.3f} ms"
    )


def compare_cold(matcher: Matcher, sample: list[tuple[HostState, str]]) -> None:
    """Per host: memoized (the fleet's caches warm) against nothing shared between hosts."""
    warm, cold = [], []
    for state, digest in sample:
        begin = time.perf_counter_ns()
        matcher.assess(state, digest)
        warm.append((time.perf_counter_ns() - begin) / 1e6)
    for state, digest in sample:
        matcher.index.clear_cache()
        debian_version.cache_clear()
        begin = time.perf_counter_ns()
        Matcher(matcher.index, matcher.levels).assess(state, digest)
        cold.append((time.perf_counter_ns() - begin) / 1e6)
    ratio = statistics.median(cold) / statistics.median(warm)
    print(
        f"per host, nothing shared: median {statistics.median(cold):.1f} ms; memoized: "
        f"{statistics.median(warm):.3f} ms; ratio {ratio:.0f}x ({len(sample)} hosts)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--packages", type=int, default=2000)
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--sources", type=int, default=40_000)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--unique", type=float, default=0.05, help="hosts with their own list")
    parser.add_argument("--checkins", type=int, default=2000)
    parser.add_argument("--cold-sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()

    started = time.perf_counter()
    world, hosts = make_world(args)
    report_world(world, hosts, time.perf_counter() - started)
    gc.collect()
    gc.freeze()  # the world is made once and never freed: the collector need not walk it
    world_mb = rss_mb()

    started = time.perf_counter()
    index = AdvisoryIndex(world.advisories)
    matcher = Matcher(index, world.levels)
    seconds = time.perf_counter() - started
    print(f"index: {index.verdicts} verdicts from {index.records} records in {seconds:.1f} s")

    fleet = Fleet(matcher)
    ordered = sorted(hosts, key=lambda host: host[1])
    started, cpu = time.perf_counter(), time.process_time()
    refused = fleet.recompute(ordered)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"full recompute: {wall:.1f} s wall, {cpu:.1f} s CPU for {len(hosts)} hosts "
        f"({1e6 * wall / len(hosts):.0f} us per host), {len(refused)} refused; "
        f"RSS +{rss_mb() - world_mb:.0f} MB over the world's {world_mb:.0f} MB"
    )
    gc.freeze()  # as a server would after a recompute: the fleet's assessments live long
    statuses = counts.by_status(fleet.totals)
    print("  fleet counts: " + ", ".join(f"{s.value} {n}" for s, n in statuses.items()))

    rng = random.Random(args.seed + 1)
    for name, checkins in checkin_variants(rng, world, hosts, args.checkins).items():
        measure_checkins(fleet, name, checkins)
    compare_cold(matcher, rng.sample(hosts, args.cold_sample))
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
