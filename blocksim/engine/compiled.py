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
compiled code finds dispatchers, and later calls skip the stub.

A stub still calls its dispatcher when it was captured elsewhere (a test's
``real = burst_kernel._run``), and a name a test has patched meanwhile is
left patched.
"""

from __future__ import annotations

import functools


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
        for stub in self.stubs:
            stub.dispatcher = njit(**stub.options)(stub.py_func)
        for stub in self.stubs:
            name = stub.py_func.__name__
            if self.namespace.get(name) is stub:
                self.namespace[name] = stub.dispatcher
        self.loaded = True


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
