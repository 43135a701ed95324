"""Limits: what a scenario file may be, and what a run may hold and do.

Checked before anything runs, so that no input exhausts the machine: each
problem is one located line giving the estimate and the limit, e.g.::

    scenario.toml: sample-interval: 3.6e12 samples over duration 1h; at most 1e6
    (raise sample-interval, or --max-samples)

Three kinds (documented in docs/scenario-format.md, "Limits"):

- **the file** (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`,
  :data:`MAX_KEY_CHARS`, :data:`MAX_NAME_CHARS`): read before validation,
  :func:`file_problems` and :func:`raw_problems`;
- **what QEMU accepts** (:func:`max_image_size`, :data:`BDRV_MAX_LENGTH`)
  and the engine's own bounds (:data:`MAX_IMAGES`, :data:`MAX_DURATION`):
  fixed, like QEMU's;
- **the cost of a run** (:class:`Limits`: samples, guest requests, memory
  held in proportion to the disks' virtual sizes, guest workers): estimated
  from the validated scenario by :func:`cost_problems`, overridable
  (``--max-samples``, ``--max-requests``, ``--max-memory`` on run, validate
  and sweep).  A run also stays within ``max_samples`` and ``max_requests``
  while it runs (``blocksim.simulation``): it ends early, marked truncated.

Imports: nothing that runs (the scenario layer's own modules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
SECOND = 1_000_000_000

# -- the file --------------------------------------------------------------------------
#: A scenario file larger than this is refused before it is read (the
#: library's largest is a few KiB; tomllib and validation take about 1 s and
#: 50 MiB a MiB of TOML, so a 50 MB file would take a minute and GiBs).
MAX_FILE_BYTES = 1 * MiB
#: Tables and arrays nested deeper than this are refused (the format nests
#: at most 5 deep: ``images.NAME.bitmaps[0].dirty[0]``).
MAX_DEPTH = 16
#: A workload's trace CSV file larger than this is refused before it is read
#: (its rows are kept in the resolved scenario; a day of one row a second is
#: about 1.5 MiB).
MAX_TRACE_BYTES = 16 * MiB
#: A key, and so a table's NAME (image, drive, job, ...), at most this many
#: characters (a NAME also becomes a QMP id and a series column).
MAX_KEY_CHARS = 255
#: The scenario's ``name`` (results folders shorten long ones, see
#: ``blocksim.record.results.folder_name``).
MAX_NAME_CHARS = 1024

# -- what QEMU accepts, and the engine -------------------------------------------------
#: include/block/block-common.h BDRV_MAX_LENGTH: QEMU_ALIGN_DOWN(INT64_MAX,
#: BDRV_MAX_ALIGNMENT = 1 GiB), the largest length or offset of any request
#: and any disk: the bound of a raw image, and of every size in a scenario.
BDRV_MAX_LENGTH = (2**63 - 1) // GiB * GiB
#: block/qcow2.h QCOW_MAX_L1_SIZE (bytes of the L1 table) and L1E_SIZE.
QCOW_MAX_L1_SIZE = 32 * MiB
_L1E_SIZE = _L2E_SIZE = 8
#: The content journal's map count (blocksim.engine.journal.MAX_MAPS: the
#: map's index takes 9 bits of a log word): one map per image.
MAX_IMAGES = 512
#: Every duration (the run's, a latency, a time): at most ten years, far
#: below the clock's NEVER (2**62 ns) that compiled code compares with.
MAX_DURATION = 10 * 365 * 24 * 3600 * SECOND
#: A device's queue depth (the model keeps a slot per entry).
MAX_QUEUE_DEPTH = 65536
#: Rates (bytes per second): below 2**62 so that compiled code's products
#: of bytes and nanoseconds stay in 64 bits.
MAX_RATE = 2**62


def max_image_size(fmt: str, cluster_size: int) -> int:
    """The largest virtual size QEMU 7.2 gives an image of this format.

    qcow2: ``qcow2_grow_l1_table`` (block/qcow2-cluster.c) refuses an L1
    table of more than QCOW_MAX_L1_SIZE / L1E_SIZE entries (-EFBIG), each
    mapping an L2 table of ``cluster_size / L2E_SIZE`` clusters: 2 PiB at
    64 KiB clusters, 128 GiB at 512 B (``qemu-img create -f qcow2 x 2P``
    works, ``2P+64K`` fails "The image size is too large for file format
    'qcow2'"; checked with qemu-img 7.2).  raw: BDRV_MAX_LENGTH."""
    if fmt == "qcow2":
        per_l2 = cluster_size // _L2E_SIZE * cluster_size
        return min(QCOW_MAX_L1_SIZE // _L1E_SIZE * per_l2, BDRV_MAX_LENGTH)
    return BDRV_MAX_LENGTH


# -- the cost of a run -----------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """The cost limits of a run (overridable: ``--max-samples``, ...)."""

    #: rows of the time series (samples = duration / sample-interval + 1)
    max_samples: int = 1_000_000
    #: guest requests over the run (workloads and guest-burst commands)
    max_requests: int = 100_000_000
    #: memory held in proportion to the virtual sizes (bytes, estimated)
    max_memory: int = 4 * GiB
    #: guest workers (SimPy processes): the sum of the workloads' iodepth
    max_workers: int = 100_000


DEFAULT = Limits()

#: Bytes held per 64 MiB content page of an image, whatever its data: the
#: journal's log length (8) and page flags (2); and per page of initial
#: data, its entry in the extent map (~100).
_PAGE_BYTES = 10
_DATA_PAGE_BYTES = 100
_PAGE_SHIFT = 26
#: Bytes a dirty bitmap holds per granule (blocksim.model.bitmap: a byte,
#: plus 9 bytes per block of 512).
_GRANULE_BYTES = 1 + 9 / 512


def count(n: float) -> str:
    """A count for messages: exact below a million, else ``3.6e15``."""
    if n == math.inf:
        return "unbounded"
    if n < 1_000_000:
        return str(int(n))
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def _size(n: float) -> str:
    from .units import format_size
    return format_size(int(n)) if n < 1024 else format_size(int(n) // KiB * KiB)


# -- checks on the file and the raw data -----------------------------------------------
def file_problems(data_size: int) -> list[str]:
    if data_size > MAX_FILE_BYTES:
        return [f"file of {_size(data_size)}; a scenario file is at most {_size(MAX_FILE_BYTES)}"]
    return []


def raw_problems(raw: Any) -> list[tuple[tuple, str]]:
    """Nesting depth, key lengths and the name's length of raw data (a
    TOML document or a dict), walked without recursion."""
    problems: list[tuple[tuple, str]] = []
    stack: list[tuple[tuple, Any]] = [((), raw)]
    deep = False
    while stack:
        loc, value = stack.pop()
        if len(loc) > MAX_DEPTH:
            if not deep:
                problems.append((loc[:MAX_DEPTH], f"nested more than {MAX_DEPTH} levels deep; "
                                                  f"a scenario nests at most {MAX_DEPTH}"))
                deep = True
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and len(key) > MAX_KEY_CHARS:
                    problems.append((loc + (key[:40] + "...",),
                                     f"a key of {len(key)} characters; at most {MAX_KEY_CHARS}"))
                    continue
                stack.append((loc + (key,), item))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                stack.append((loc + (i,), item))
    images = raw.get("images") if isinstance(raw, Mapping) else None
    if isinstance(images, Mapping) and len(images) > MAX_IMAGES:
        problems.append((("images",), f"{len(images)} images; at most {MAX_IMAGES} (the content "
                                      "journal's map count, blocksim.engine.journal.MAX_MAPS)"))
    name = raw.get("name") if isinstance(raw, Mapping) else None
    if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
        problems.append((("name",), f"{len(name)} characters; at most {MAX_NAME_CHARS}"))
    problems.sort(key=lambda p: [str(part) for part in p[0]])
    return problems


# -- the cost of a validated scenario --------------------------------------------------
def _guest_requests(scenario) -> tuple[float, list[tuple[tuple, float, str]]]:
    """Estimated guest requests of the run, and each workload's share with
    how it was estimated (an upper bound for paced workloads; for a closed
    loop, each worker's request taking the device's latency, its transfer
    and the think time, at most the device's bandwidth)."""
    total = 0.0
    parts = []
    duration = scenario.duration
    for name, w in scenario.workloads.items():
        end = min(duration, w.end) if w.end is not None else duration
        active = max(0, end - w.start)
        if w.rate_iops:
            n = w.rate_iops * active / SECOND + 1
            how = f"rate-iops {count(w.rate_iops)} for {_seconds(active)}"
        else:
            drive = scenario.drives.get(w.drive)
            image = scenario.images.get(drive.image) if drive is not None else None
            latency = image.latency if image is not None else 0
            transfer = w.bs * SECOND // image.bandwidth if image is not None else 0
            per_worker = latency + transfer + w.think_time
            if per_worker == 0:
                n = math.inf
                how = ("a closed loop whose requests take no simulated time (latency, transfer "
                       "time and think-time 0)")
            else:
                n = w.iodepth * active / per_worker
                if transfer:
                    n = min(n, active / transfer)
                n += w.iodepth
                how = f"a closed loop of iodepth {w.iodepth} for {_seconds(active)}"
        if w.number_ios is not None and w.number_ios < n:
            n, how = w.number_ios, f"number-ios {w.number_ios}"
        parts.append((("workloads", name), n, how))
        total += n
    for i, action in enumerate(scenario.actions):
        if action.command == "guest-burst":
            n = action.arguments.get("number-ios", 1)
            parts.append((("actions", i), n, "guest-burst"))
            total += n
    return total, parts


def _seconds(ns: int) -> str:
    from .units import format_duration
    return format_duration(ns)


def _size_held(scenario) -> list[tuple[tuple, float, str]]:
    """Memory held in proportion to virtual sizes: per image, its content
    pages; per copying job and named bitmap, a dirty bitmap."""
    parts = []
    images = scenario.images
    for name, image in images.items():
        pages = (image.size >> _PAGE_SHIFT) + 1
        data_pages = sum(length >> _PAGE_SHIFT for _, length in image.data)
        parts.append((("images", name, "size"), pages * _PAGE_BYTES + data_pages * _DATA_PAGE_BYTES,
                      f"image '{name}'"))
        for b in image.bitmaps:
            g = b.granularity or min(max(image.cluster_size, 4 * KiB), 64 * KiB)
            parts.append((("images", name, "size"), image.size / g * _GRANULE_BYTES,
                          f"bitmap '{b.name}' of image '{name}'"))
    for job_id, job in scenario.jobs.items():
        drive = scenario.drives.get(job.device)
        image = images.get(drive.image) if drive is not None else None
        if image is None:
            continue
        if job.type == "mirror":
            # absent: the target's default (jobs/mirror.py target_granularity)
            target = images.get(job.target)
            cluster = target.cluster_size if target is not None and target.format == "qcow2" \
                else 64 * KiB
            g, bitmaps = job.granularity or min(max(cluster, 4 * KiB), 64 * KiB), 1
        elif job.type == "backup":
            g, bitmaps = min(image.cluster_size, 64 * KiB), 2
        elif job.type == "commit":
            # an active commit is a mirror into the base, at the base's
            # default granularity (jobs/mirror.py target_granularity); an
            # intermediate one holds no bitmap, counted as one all the same
            chain = scenario.backing_chain(drive.image)
            base = images.get(job.base or chain[-1])
            cluster = base.cluster_size if base is not None and base.format == "qcow2" else 64 * KiB
            g, bitmaps = min(max(cluster, 4 * KiB), 64 * KiB), 1
        else:
            continue
        parts.append((("images", drive.image, "size"), bitmaps * image.size / g * _GRANULE_BYTES,
                      f"job '{job_id}': dirty bitmap{'s' if bitmaps > 1 else ''}"))
    for i, action in enumerate(scenario.actions):
        if action.command == "block-dirty-bitmap-add":
            node = action.arguments.get("node")
            image = images.get(node)
            if image is None and node in scenario.drives:
                image = images.get(scenario.drives[node].image)
            if image is not None:
                g = (action.arguments.get("granularity")
                     or min(max(image.cluster_size, 4 * KiB), 64 * KiB))
                parts.append((("actions", i), image.size / g * _GRANULE_BYTES,
                              f"bitmap '{action.arguments.get('name')}'"))
    return parts


def cost_problems(scenario, limits: Optional[Limits] = None) -> list[tuple[tuple, str]]:
    """What the validated ``scenario`` would cost beyond ``limits``, each as
    ``(location, message)`` with the estimate and the limit."""
    limits = limits or DEFAULT
    problems: list[tuple[tuple, str]] = []
    samples = scenario.duration // scenario.sample_interval + 2
    if samples > limits.max_samples:
        problems.append((("sample-interval",),
                         f"{count(samples)} samples over duration {_seconds(scenario.duration)}; "
                         f"at most {count(limits.max_samples)} (raise sample-interval, "
                         f"or --max-samples)"))
    workers = sum(w.iodepth for w in scenario.workloads.values())
    workers += sum(a.arguments.get("iodepth", 1) for a in scenario.actions
                   if a.command == "guest-burst")
    if workers > limits.max_workers:
        problems.append((("workloads",), f"{count(workers)} guest workers (the sum of the "
                                         f"workloads' and guest-bursts' iodepth); at most "
                                         f"{count(limits.max_workers)}"))
    requests, parts = _guest_requests(scenario)
    cap = scenario.max_requests
    if cap is not None and cap > limits.max_requests:
        problems.append((("max-requests",), f"{count(cap)}; at most {count(limits.max_requests)} "
                                            "(--max-requests)"))
    elif requests > limits.max_requests and (cap is None or cap > limits.max_requests):
        loc, n, how = max(parts, key=lambda p: p[1])
        share = f"{count(n)} of them here, " if len(parts) > 1 else ""
        problems.append((loc, f"{count(requests)} guest requests over duration "
                              f"{_seconds(scenario.duration)} ({share}{how}); at most "
                              f"{count(limits.max_requests)} (lower the rate, the duration or "
                              "number-ios, set max-requests to stop the run there, or "
                              "--max-requests)"))
    held = _size_held(scenario)
    memory = sum(n for _, n, _ in held)
    if memory > limits.max_memory:
        loc, n, what = max(held, key=lambda p: p[1])
        problems.append((loc, f"a run would hold about {_size(memory)} for the virtual sizes "
                              f"({what}: {_size(n)}); at most {_size(limits.max_memory)} "
                              "(smaller images, larger granularity, or --max-memory)"))
    return problems


def qemu_problems(scenario) -> list[tuple[tuple, str]]:
    """Images larger than QEMU accepts for their format (:func:`max_image_size`),
    queues deeper than a device has."""
    from .units import format_size
    problems: list[tuple[tuple, str]] = []
    for name, image in scenario.images.items():
        if image.queue_depth > MAX_QUEUE_DEPTH:
            problems.append((("images", name, "queue-depth"),
                             f"{count(image.queue_depth)}; at most {MAX_QUEUE_DEPTH} (the "
                             "largest queue a device offers: NVMe's 65536 entries)"))
        top = max_image_size(image.format, image.cluster_size)
        if image.size > top:
            detail = (f"with {format_size(image.cluster_size)} clusters (QEMU's L1 table of at "
                      "most QCOW_MAX_L1_SIZE; a larger cluster-size allows more)"
                      if image.format == "qcow2" else "(QEMU's BDRV_MAX_LENGTH)")
            problems.append((("images", name, "size"),
                             f"{format_size(image.size)} is larger than QEMU accepts for a "
                             f"{image.format} image {detail}: at most {format_size(top)}"))
    return problems
