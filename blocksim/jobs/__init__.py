"""Block jobs: one life cycle, one module per job type.

- ``base.py`` (read first): :class:`BlockJob`, QEMU's job status machine
  (``job.c``), the verbs management sends (cancel, pause, resume, set-speed,
  complete, finalize, dismiss), pause points and the rate limit.  A job type
  implements ``run`` and the hooks listed in its docstring.
- ``stream.py``: ``block-stream``, copying a backing chain into the top.
- ``backup.py``: ``blockdev-backup``, its block-copy loop and the
  copy-before-write filter it puts in the drive's write path.
- ``mirror.py``: ``drive-mirror`` / ``blockdev-mirror``, with its copy loop;
  its exact shortcuts (agenda, copy bursts, the compiled loop) are the
  engine's, which the mirror calls and hands itself to.
- ``commit.py``: ``block-commit``, intermediate (its own copy loop) and
  active (the mirror's, with the base as target).

A new job type is one module here plus one :data:`JOB_TYPES` entry (and its
scenario table in ``blocksim.scenario``).  Error decisions are not made
here: jobs ask the model's error-policy engine.

Imports: the model, the engine (through ``blocksim.engine``) and
``blocksim.errors``; never the record, management or anything above.
"""

from .backup import BackupJob
from .base import drain_all, newest_first
from .commit import ActiveCommitJob, CommitJob, make_commit_job
from .mirror import MirrorJob
from .stream import StreamJob

#: Each scenario job ``type`` and what builds its job from ``(sim, job_id,
#: spec)``: the class, or for ``commit`` a function choosing between the
#: intermediate and the active commit, as QEMU's ``block-commit`` does.
JOB_TYPES = {"mirror": MirrorJob, "stream": StreamJob, "commit": make_commit_job,
             "backup": BackupJob}

__all__ = ["JOB_TYPES", "ActiveCommitJob", "BackupJob", "CommitJob", "MirrorJob", "StreamJob",
           "drain_all", "make_commit_job", "newest_first"]
