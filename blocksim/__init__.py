"""blocksim: a discrete-event simulator of a VM block layer under I/O faults."""

__version__ = "0.1.0"
