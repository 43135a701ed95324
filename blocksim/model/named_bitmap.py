"""Named dirty bitmaps: what ``block-dirty-bitmap-add`` puts on a node.

Modelled on QEMU's ``BdrvDirtyBitmap`` (``block/dirty-bitmap.c``) and its QMP
commands (``block/monitor/bitmap-qmp-cmds.c``).  A :class:`NamedBitmap`
records every write to its node while it is *recording* (enabled): the
granules a write touches turn dirty (a 4 KiB write at 100 KiB makes a 64 KiB
granule dirty: count 65536).  Its bits are a
:class:`~blocksim.model.bitmap.DirtyBitmap`.

A backup that uses the bitmap (``sync=bitmap``, or ``full``/``top`` with a
bitmap) *freezes* it (``bdrv_dirty_bitmap_create_successor``): the bitmap
becomes busy, its count stays as it was, and new writes go to an anonymous
*successor*.  When the job ends the successor is either installed as the
bitmap (``abdicate``: only the writes made during the job are left) or
merged back (``reclaim``: nothing is lost); see ``jobs/backup.py`` for which
``bitmap-mode`` does what.

Queries list a node's bitmaps newest first, as ``bdrv_query_dirty_bitmaps``
(each ``{name, recording, persistent, busy, granularity, count}``).
"""

from __future__ import annotations

from ..errors import CommandError
from .bitmap import DirtyBitmap

MIN_GRANULARITY = 512

#: why ``block-dirty-bitmap-merge`` needs a bitmap to merge
EMPTY_MERGE = ("an empty 'bitmaps' list: QEMU 7.2 dies on it (block_dirty_bitmap_merge "
               "frees a backup it never took); give at least one bitmap")


def default_granularity(cluster_size: int) -> int:
    """``bdrv_get_default_bitmap_granularity``: the node's cluster size
    clamped to [4 KiB, 64 KiB] (64 KiB when the node has none)."""
    return min(max(cluster_size or 65536, 4096), 65536)


def dirty_ranges(bits: DirtyBitmap):
    """The dirty byte ranges ``(start, end)`` of ``bits``, in order (end capped
    at the disk's size); costs per run and per mixed block, not per granule
    (:meth:`DirtyBitmap.runs`)."""
    g, size = bits.granularity, bits.size
    for b, e in bits.runs():
        yield b * g, min(e * g, size)


def merge_into(dst: DirtyBitmap, src: DirtyBitmap) -> None:
    """``bdrv_dirty_bitmap_merge_internal``: every byte dirty in ``src`` turns
    dirty in ``dst`` (at ``dst``'s granularity)."""
    for a, b in dirty_ranges(src):
        dst.mark(a, b)


class NamedBitmap:
    """One named dirty bitmap of a node (a write listener of the node)."""

    def __init__(self, name: str, size: int, granularity: int, persistent: bool = False,
                 recording: bool = True):
        self.name = name
        self.size = size
        self.granularity = granularity
        self.persistent = persistent
        self.recording = recording
        self.bits = DirtyBitmap(size, granularity)
        #: while a job uses the bitmap: where new writes go
        self.successor: DirtyBitmap | None = None
        #: a transaction's remove holds it until the transaction commits
        #: (``block_dirty_bitmap_remove_prepare``: busy meanwhile)
        self.held = False

    # -- recording (the node's write listeners) ---------------------------------
    def mark(self, start: int, end: int) -> None:
        if self.recording:
            (self.successor or self.bits).mark(start, end)

    def mark_writes(self, offsets, length: int) -> None:
        if self.recording:
            (self.successor or self.bits).mark_writes(offsets, length)

    # -- state ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """In use by an operation: a backup (frozen, with a successor), or a
        transaction that removes it."""
        return self.successor is not None or self.held

    @property
    def count(self) -> int:
        """Dirty bytes (granules x granularity), as QMP's ``count``."""
        return self.bits.count * self.granularity

    def clear(self) -> None:
        self.bits = DirtyBitmap(self.size, self.granularity)

    def copy_bits(self) -> DirtyBitmap:
        """A copy of the bits (a transaction's backup, ``hbitmap`` copies)."""
        bits = DirtyBitmap(self.size, self.granularity)
        merge_into(bits, self.bits)
        return bits

    def query(self) -> dict:
        return {"name": self.name, "recording": self.recording, "persistent": self.persistent,
                "busy": self.busy, "granularity": self.granularity, "count": self.count}

    # -- a job's use (block/dirty-bitmap.c) ---------------------------------------------
    def create_successor(self) -> None:
        """``bdrv_dirty_bitmap_create_successor``: freeze the bits; the
        successor records from now on (if the bitmap was recording)."""
        self.successor = DirtyBitmap(self.size, self.granularity)

    def abdicate(self) -> None:
        """``bdrv_dirty_bitmap_abdicate``: the successor becomes the bitmap."""
        self.bits, self.successor = self.successor, None

    def reclaim(self) -> None:
        """``bdrv_reclaim_dirty_bitmap``: the successor is merged back in."""
        merge_into(self.bits, self.successor)
        self.successor = None


# -- the QMP commands (block/monitor/bitmap-qmp-cmds.c) ---------------------------------
def _busy(name: str) -> CommandError:
    return CommandError(f"Bitmap '{name}' is currently in use by another operation "
                        "and cannot be used")


def add_bitmap(node, name: str, granularity: int | None = None, persistent: bool = False,
               disabled: bool = False) -> NamedBitmap:
    """``block-dirty-bitmap-add`` on ``node`` (a BlockDevice)."""
    if not name:
        raise CommandError("Bitmap name cannot be empty")
    if granularity is None:
        granularity = default_granularity(node.cluster_size if node.format == "qcow2" else 0)
    elif granularity < MIN_GRANULARITY or granularity & (granularity - 1):
        raise CommandError("Granularity must be power of 2 and at least 512")
    if persistent and node.format != "qcow2":
        # bdrv_can_store_new_dirty_bitmap (error_setg_errno: ENOTSUP)
        raise CommandError(f"Can't store persistent bitmaps to {node.name}: "
                           "Operation not supported")
    if name in node.bitmaps:
        raise CommandError(f"Bitmap already exists: {name}")
    bitmap = NamedBitmap(name, node.size, granularity, persistent, recording=not disabled)
    node.bitmaps[name] = bitmap
    node.write_listeners.append(bitmap)
    return bitmap


def lookup_bitmap(node, name: str) -> NamedBitmap:
    """``block_dirty_bitmap_lookup``."""
    bitmap = node.bitmaps.get(name)
    if bitmap is None:
        raise CommandError(f"Dirty bitmap '{name}' not found")
    return bitmap


def remove_bitmap(node, name: str) -> NamedBitmap:
    """``block-dirty-bitmap-remove``: refused while a job uses it."""
    bitmap = lookup_bitmap(node, name)
    if bitmap.busy:
        raise _busy(name)
    release_bitmap(node, bitmap)
    return bitmap


def hold_bitmap(node, name: str) -> NamedBitmap:
    """A transaction's ``block-dirty-bitmap-remove`` prepared
    (``block_dirty_bitmap_remove_prepare``): refused while busy, then busy
    itself until the transaction commits (released) or aborts."""
    bitmap = lookup_bitmap(node, name)
    if bitmap.busy:
        raise _busy(name)
    bitmap.held = True
    return bitmap


def release_bitmap(node, bitmap: NamedBitmap) -> None:
    """``bdrv_release_dirty_bitmap``: the bitmap leaves its node."""
    del node.bitmaps[bitmap.name]
    node.write_listeners.remove(bitmap)


def clear_bitmap(node, name: str) -> DirtyBitmap:
    """``block-dirty-bitmap-clear``: refused while a job uses it.  Returns
    the bits it held (a transaction restores them on abort)."""
    bitmap = lookup_bitmap(node, name)
    if bitmap.busy:
        raise _busy(name)
    bits = bitmap.bits
    bitmap.clear()
    return bits


def merge_bitmaps(node, target: str, sources: list) -> DirtyBitmap:
    """``block-dirty-bitmap-merge`` (bitmap-qmp-cmds.c ``block_dirty_bitmap_merge``):
    every source's dirty bytes turn dirty in ``node``'s bitmap ``target``, at
    its granularity, whatever the sources' granularities or whether either is
    recording.  ``sources``: ``(source node, name)`` each, in order.

    Each step is ``bdrv_merge_dirty_bitmap``: the target must not be busy
    (``BDRV_BITMAP_DEFAULT``), nor the source (``BDRV_BITMAP_ALLOW_RO``), and
    both must cover the same size.  The first failure refuses the command
    and QEMU restores the target from the backup it took before the first
    step: all or nothing, so checking every step first is the same.
    Returns the target's bits as they were (a transaction restores them).

    An empty ``sources`` is refused here: QEMU 7.2 then frees a backup it
    never took (``hbitmap_free(NULL)``) and dies with SIGSEGV (checked on
    qemu-storage-daemon 7.2)."""
    dst = lookup_bitmap(node, target)
    bitmaps = []
    for src_node, name in sources:
        src = lookup_bitmap(src_node, name)
        if dst.busy:
            raise _busy(dst.name)
        if src.busy:
            raise _busy(src.name)
        if src.size != dst.size:
            raise CommandError(f"Bitmaps are of different sizes (destination size is {dst.size}, "
                               f"source size is {src.size}) and can't be merged")
        bitmaps.append(src)
    if not bitmaps:
        raise CommandError(EMPTY_MERGE)
    backup = dst.copy_bits()
    for src in bitmaps:
        merge_into(dst.bits, src.bits)
    return backup


def enable_bitmap(node, name: str, enable: bool) -> bool:
    """``block-dirty-bitmap-enable`` / ``-disable``: refused while busy.
    Returns whether it was recording (a transaction restores that)."""
    bitmap = lookup_bitmap(node, name)
    if bitmap.busy:
        raise _busy(name)
    was, bitmap.recording = bitmap.recording, enable
    return was
