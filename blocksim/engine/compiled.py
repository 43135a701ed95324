"""Compiled functions loaded on first use: numba only when a run needs it.

Importing numba (and llvmlite under it) costs about 60 MiB and a second,
more than all the rest of ``import blocksim``; ``blocksim --help``,
``blocksim validate`` and any run that never reaches compiled code need
none of it.  A module declares its compiled functions with
``njit = Compiled(globals())`` and ``@njit(cache=True)``, as with numba's
own ``njit``: until the first call of any of them, each name is a stub.
That first call imports numba and compiles the module's functions together
(``numba.njit`` with the same options, so the same cache files), putting
the dispatchers in the module's namespace, so compiled code calling
compiled code finds dispatchers, and later calls skip the stub.  A compiled
function of another module imported by name (``from .bitmap_blocks import
_mark``) is a stub of that module's: loading this module loads that one
too and puts its dispatcher under the imported name.

A stub still calls its dispatcher when it was captured elsewhere (a test's
``real = burst_kernel._run``), and a name a test has patched meanwhile is
left patched.

Once a function is compiled or loaded from numba's cache, LLVM's own code
is no longer needed: its machine code lives in memory of its own.  Yet
loading numba's target context and linking the first cached function
touch about 65 MiB of ``libllvmlite.so``'s code and read-only data, pages
of the file that then stay in the process's resident set (a third of a
1 TiB mirror's peak).  After each compilation or cache load (numba's
``numba:compiler_lock`` event, outermost), :func:`shed_compiler_pages`
hands those pages back (``madvise(MADV_DONTNEED)`` on the library's
mappings that are read-only and hold no page of their own: they are the
file's pages, read back from the page cache if LLVM runs again).

Loading numba leaves some 130 K objects that live as long as the process;
Python's cyclic garbage collector would walk them all at each of its full
collections (0.05 s each, three in benchmark (b)).  They are frozen
(``gc.freeze``: left out of every collection, as the objects of a fork's
parent are) as each module's functions are loaded; what else is alive then
(the run's objects of the moment) is kept, as refcounting alone keeps it: a
cycle among them is never collected.
"""

from __future__ import annotations

import ctypes
import functools
import gc


class Compiled:
    """The compiled functions of one module (its ``globals()``)."""

    def __init__(self, namespace: dict, **defaults):
        self.namespace = namespace
        self.defaults = defaults
        self.stubs: list[_Stub] = []
        self.loaded = False

    def __call__(self, fn=None, **options):
        """``@njit``, ``@njit(**options)`` or ``njit(**options)`` as a
        decorator to keep."""
        if fn is None:
            return lambda f: self(f, **options)
        stub = _Stub(self, fn, {**self.defaults, **options})
        self.stubs.append(stub)
        return stub

    def load(self) -> None:
        if self.loaded:
            return
        from numba import njit
        _watch_compilations()
        # (intrinsics the functions call: made now, numba loaded)
        for name, value in list(self.namespace.items()):
            if value.__class__ is _Intrinsic:
                self.namespace[name] = value.build()
        for stub in self.stubs:
            stub.dispatcher = njit(**stub.options)(stub.py_func)
        for stub in self.stubs:
            name = stub.py_func.__name__
            if self.namespace.get(name) is stub:
                self.namespace[name] = stub.dispatcher
        # compiled functions of another module called from here (imported
        # as names: bitmap_blocks' helpers): their dispatchers too, which
        # numba needs when it compiles this module's functions
        for name, value in list(self.namespace.items()):
            if value.__class__ is _Stub and value.owner is not self:
                value.owner.load()
                self.namespace[name] = value.dispatcher
        self.loaded = True
        gc.freeze()


def machine_code(fn, args: tuple):
    """A compiled function's machine code for arguments of the types of
    ``args`` (one call's), to be called without numba's dispatch (each
    argument's type looked up and matched at each call: some 1.5 µs a call
    of sixteen arrays, ``blocksim.engine.copyrows.step``'s), for a caller
    whose arguments keep those types (arrays it made, of one dtype and
    layout: the machine code takes them as it finds them).  ``fn`` itself if
    it has no machine code for exactly those types (not compiled yet, or
    not a dispatcher: a test's wrapper)."""
    overloads = getattr(fn, "overloads", None)
    if not overloads:
        return fn
    from numba import typeof
    got = overloads.get(tuple(typeof(a) for a in args))
    return fn if got is None else got.entry_point


class _Stub:
    """Stands for a compiled function until numba is loaded."""

    def __init__(self, owner: Compiled, fn, options: dict):
        self.owner = owner
        self.py_func = fn
        self.options = options
        self.dispatcher = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if self.dispatcher is None:
            self.owner.load()
        return self.dispatcher(*args)


class _Intrinsic:
    """A numba intrinsic, made when a module that calls it loads its
    compiled functions (its name in that module's namespace replaced)."""

    def __init__(self, make):
        self.make = make
        self.built = None

    def build(self):
        if self.built is None:
            self.built = self.make()
        return self.built


def _make_prefetch():
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, index):
        sig = types.void(arr, index)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0i8")
            # (a read, kept in every cache level, of data)
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()
        return sig, codegen
    return prefetch


#: ``prefetch(arr, i)`` in compiled code: a hint that ``arr[i]`` will be read
#: soon (LLVM's ``llvm.prefetch``, x86's ``prefetcht0``), so that its cache
#: line is on its way while other work runs; it changes nothing (the
#: index must lie inside the array, as for a read).  Code
#: whose loads miss the caches at random places (a 64 TiB disk's pages)
#: waits for one line at a time; prefetching the next few items' lines
#: overlaps those waits.
prefetch = _Intrinsic(_make_prefetch)


# -- LLVM's pages -------------------------------------------------------------------

_MADV_DONTNEED = 4
_watching = False


def _watch_compilations() -> None:
    """Shed LLVM's pages after each outermost compilation or cache load."""
    global _watching
    if _watching:
        return
    from numba.core import event

    class Shed(event.Listener):
        depth = 0

        def on_start(self, ev):
            self.depth += 1

        def on_end(self, ev):
            self.depth -= 1
            if self.depth == 0:
                shed_compiler_pages()

    event.register("numba:compiler_lock", Shed())
    _watching = True


def shed_compiler_pages(library: str = "libllvmlite") -> int:
    """Drop from the resident set the pages of ``library``'s mappings that
    are read-only file pages (no private copy, nothing anonymous: what the
    file holds, so nothing is lost and a later use reads them back); how
    many bytes of mappings were advised.  Linux only
    (``/proc/self/smaps``); elsewhere nothing.  The mappings are found once
    (a read-only mapping stays clean), then only advised."""
    ranges = _clean_ranges.get(library)
    if ranges is None:
        ranges = _clean_ranges[library] = _find_clean_ranges(library)
    if not ranges:
        return 0
    madvise = ctypes.CDLL(None).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    done = 0
    for lo, hi in ranges:
        if madvise(lo, hi - lo, _MADV_DONTNEED) == 0:
            done += hi - lo
    return done


# library -> its clean read-only mappings, (start, end) pairs
_clean_ranges: dict[str, list] = {}


def _find_clean_ranges(library: str) -> list:
    try:
        with open("/proc/self/smaps") as f:
            text = f.read()
        ctypes.CDLL(None).madvise
    except (OSError, AttributeError):
        return []
    ranges = []
    mapping = None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if not head.endswith(":"):      # a mapping: range, perms, ..., path
            fields = rest.split()
            mapping = None
            if (len(fields) >= 5 and library in fields[4].rsplit("/", 1)[-1]
                    and "w" not in fields[0]):
                lo, hi = (int(x, 16) for x in head.split("-"))
                mapping = [lo, hi, True]
            continue
        if mapping is None:
            continue
        if head in ("Private_Dirty:", "Anonymous:") and int(rest.split()[0]):
            mapping[2] = False
        elif head == "VmFlags:":
            if mapping[2]:
                ranges.append((mapping[0], mapping[1]))
            mapping = None
    return ranges
