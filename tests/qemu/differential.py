"""Random differential cases against real QEMU: scenarios drawn at random
from eleven grammars, for ``blocksim qemu-check``.

    python tests/qemu/differential.py OUT [--grammar 1..11] [--seeds 0:200]
    blocksim qemu-check OUT/ --json > report.json

1. one job (stream, mirror, active mirror, commit, backup) on small images
   with random data, one or two blkdebug faults (read, write, flush, EIO or
   ENOSPC, once, twice or persistent), a random policy and a management
   reaction (query, resume, cancel, complete, pause/resume);
2. manual finalize and dismiss, bitmap backups, set-speed, speed-paced jobs,
   two jobs on two drives, write-zeroes and flush faults, jobs' verbs;
3. guest writes (guest-burst) against active mirrors, backups'
   copy-before-write and active commits, write thresholds, at times well
   apart;
4. management scripts around error pauses: several reactions (``nth``,
   ``after``, ``repeat``), stop -> resume cycles under persistent faults or
   a sector failing twice (two ``once`` rules), pause / resume / set-speed /
   cancel (plain, forced, ``job-cancel``) of a job paused by an error or by
   the user, complete before READY, manual finalize and dismiss with errors
   and cancels, enospc with ENOSPC and EIO, granularity and buf-size;
5. chains of three or four layers: stream down to a base with faults in the
   layers above it, in it and below it, intermediate commit with faults on
   its top, intermediate and base layers, active commit into a middle
   layer, mirror sync=top over a chain; one-shot faults on several nodes at
   once, policies enospc and auto;
6. jobs' verbs in each status that lasts: created (a manual start), paused
   by an error, ready, pending (manual finalize), concluded (manual
   dismiss), each followed by a query;
7. dirty bitmaps and incremental backups: one or two bitmaps (disabled, a
   granularity of their own), a backup with a bitmap (sync bitmap /
   incremental / full / top, each bitmap-mode) under target faults with
   reactions and cancels, manual finalize, a retry of the same bitmap,
   bitmap commands (add, duplicate, bad granularity, persistent, disabled,
   remove, clear, enable, disable, missing) at times and on events, guest
   writes;
8. two jobs on one chain (stream, intermediate and active commit, mirror,
   backup, in any pair), the second started while the first runs, is
   ready, paused by an error, pending or gone: accepted or refused, with
   QEMU's error class and text; write thresholds on what they write and
   guest writes through them;
9. the thin-provisioning loop as management layers run it (vdsm,
   libvirt's block-threshold): a write threshold on what a job writes (a
   commit's base, a mirror's or backup's target, an intermediate commit's
   base file, the top's file under a stream's copy-on-read) or on the
   guest's disk and its file, re-armed higher some ms after each
   BLOCK_WRITE_THRESHOLD that names it; ENOSPC (or EIO) on the target
   under enospc / stop / report (ignore for a one-shot), a query while
   paused and after the resume, a resume once "extended" (one-shot, a
   sector failing twice) or a cancel when it never is (persistent); guest
   writes over the thresholds, ENOSPC on the disk;
10. what the others leave out of the job family: query-jobs at each
   status, job-* verbs against block-job-* ones on one job (a user pause,
   an error pause, READY, pending, concluded), block-dirty-bitmap-merge of
   checkpoints into a temporary bitmap an incremental backup uses (merges
   into it and from it while the backup holds it), an active mirror whose
   target fails the writes a guest burst mirrors, under each policy.
11. transactions, as libvirt starts a backup with its checkpoint: bitmap
   actions, blockdev-backup and abort in random order, some refused and
   rolled back (grouped at times), commands after each whose answers show
   what it left, guest writes, bitmap backups whose bitmaps are compared.

Not collected by pytest: it writes scenarios, it checks nothing itself.  A
disagreement is a lead, not a verdict: real QEMU runs in real time, so cases
whose commands race the jobs (a query right after a job's creation, a
command a few ms from an event) can differ by timing alone.  Session 12's
campaign (about 900 cases) found stream's runs, blkdebug's write-zeroes
iotype, the flush's write generation, the job list's order and a pending
mirror's pause; session 13's (grammars 4 to 6) a cancelled job's
io-status and error in query-block-jobs, the nodes an intermediate commit
and a stream hold (the device no root node, held until the dismiss) and
qemu-check's reading of a json: backing file name; session 14's (grammars
7 and 8) that a drain blip really pauses a backup (its block-copy call
cancelled: an error it held is dropped), that a stream to a base an
earlier job dropped from the chain is refused, and five qemu-check fixes (image
bitmaps dirtied one at a time and without allocating, bitmap commands on
the format node, a retried backup's copy set, guest writes over a stream's
disk, a base a later job wrote into); session 15's (fresh seeds of
grammars 1 to 8, grammar 9) that writes into allocated qcow2 clusters
cross the protocol node's threshold at their host offset, and three
qemu-check fixes (a READY mirror's plain cancel completes without a pivot,
an action's `match` on a threshold's node, the jobs still running at the
end paused before the daemon's quit, whose drains woke them); session
16's (fresh seeds of grammars 1 to 9, grammar 10) that a backup's
block-copy task over a chain ends where a layer's allocation changes, that
qcow2 allocates a write's runs of new clusters one after the other and
writes the refcount block before a new L2 table (the protocol node's
threshold), four qemu-check fixes, and that QEMU's thread pool completes
requests done together newest first (the mirror threshold "races"); see
docs/qemu-check.md.

What grammars 8 and 9 avoid, since it differs by timing alone: a second
job started at the first one's start instant, a threshold set after a
job's start (QEMU copies a small disk in a few ms), a mirror with several
copies in flight under a threshold (buf-size 1 MiB), a threshold on the
protocol node of a job with parallel copies (a mirror's, an active
commit's, a backup's: which copy allocates first is a race), reactions to
a threshold and to an error a few ms apart (the two events come in either
order), a job without a speed limit (the loop's commands would come after
it), a pivot of the first job (qemu-check's jobs name the image node,
which a pivot leaves behind).  Grammar 10 avoids two commands due at one
instant (QEMU gets them one after the other, the job running between
them) and guest writes while a completed mirror waits for job-finalize
(its drain holds a guest, not qemu-check's NBD client).
"""

import argparse
import os
import random
import sys

KIB = 1024
MIB = 1024 * KIB


def extents(rng, size, n):
    out = []
    for _ in range(n):
        off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        ln = rng.choice([64 * KIB, 128 * KIB, 512 * KIB, 1 * MIB])
        ln = min(ln, size - off)
        out.append((off, ln))
    out.sort()
    merged = []
    for o, l in out:
        if merged and o <= merged[-1][0] + merged[-1][1]:
            po, pl = merged[-1]
            merged[-1] = (po, max(pl, o + l - po))
        else:
            merged.append((o, l))
    return merged


def data(rng, size):
    r = rng.random()
    if r < 0.2:
        return '"full"'
    ex = extents(rng, size, rng.randint(1, 4))
    return "[" + ", ".join(f'{{offset = "{o}", length = "{l}"}}' for o, l in ex) + "]"

POL = ["ignore", "report", "stop", "enospc"]


def grammar1(seed):
    rng = random.Random(seed)
    kind = rng.choice(["stream", "mirror", "mirror-active", "commit-int", "commit-active", "backup", "backup"])
    size = rng.choice([4, 8]) * MIB
    L = [f'name = "fuzz-{seed}"', f'description = "random differential case {seed} ({kind})"',
         f'duration = "{rng.choice([3, 4])}s"', ""]
    img = lambda name, backing=None, d=None: L.extend(
        [f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
        + ([f"data = {d}"] if d else []) + [""])

    def source(sync):
        """The job's source ``src``, over a ``base`` for sync=top."""
        if sync == "top":
            img("base", d=data(rng, size))
            img("src", "base", data(rng, size))
        else:
            img("src", d=data(rng, size))

    job = {}
    nodes = {}
    if kind == "stream":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drive = "top"; job = {"type": "stream"}; nodes = {"read": ["base", "top"], "write": ["top"]}
        pol_keys = ["on-error"]
    elif kind.startswith("mirror"):
        sync = rng.choice(["full", "full", "top", "none"]) if kind == "mirror" else rng.choice(["full", "none"])
        source(sync)
        img("dst")
        drive = "src"; job = {"type": "mirror", "target": "dst", "sync": sync}
        if kind == "mirror-active":
            job["copy-mode"] = "write-blocking"
        if rng.random() < 0.3:
            job["granularity"] = rng.choice(["65536", "131072"])
        nodes = {"read": ["src"], "write": ["dst"], "flush": ["dst"]}
        pol_keys = ["on-source-error", "on-target-error"]
    elif kind == "commit-int":
        img("base", d=data(rng, size)); img("mid", "base", data(rng, size)); img("top", "mid", data(rng, size))
        drive = "top"; job = {"type": "commit", "top": "mid", "base": "base"}
        nodes = {"read": ["mid"], "write": ["base"], "flush": ["base"]}
        pol_keys = ["on-error"]
    elif kind == "commit-active":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drive = "top"; job = {"type": "commit", "base": "base"}
        nodes = {"read": ["top"], "write": ["base"], "flush": ["base"]}
        pol_keys = ["on-error"]
    else:
        sync = rng.choice(["full", "full", "top", "none"])
        source(sync)
        img("tgt")
        drive = "src"; job = {"type": "backup", "target": "tgt", "sync": sync}
        nodes = {"read": ["src"], "write": ["tgt"], "flush": ["tgt"]}
        pol_keys = ["on-source-error", "on-target-error"]
    L += ["[drives.vda]", f'image = "{drive}"', ""]
    L += ["[jobs.j]"] + [f'{k} = "{v}"' for k, v in job.items()] + ['device = "vda"']
    for k in pol_keys:
        if rng.random() < 0.8:
            L.append(f'{k} = "{rng.choice(POL)}"')
    if rng.random() < 0.25:
        L.append(f'speed = {rng.choice([1, 2, 4]) * MIB}')
    L.append("")
    for _ in range(rng.choice([1, 1, 1, 2])):
        op = rng.choice([o for o in nodes if o != "flush"] * 3 + (["flush"] if "flush" in nodes else []))
        node = rng.choice(nodes[op])
        L += ["[[faults]]", f'image = "{node}"', f'operation = "{op}"',
              f'errno = "{rng.choice(["EIO", "EIO", "ENOSPC"])}"']
        if op != "flush":
            L += [f'offset = "{rng.randrange(0, size // (64 * KIB)) * 64 * KIB}"', 'length = "512"']
        c = rng.choice(["once", "once", 2, None])
        if c is not None:
            L.append(f'count = "{c}"' if c == "once" else f"count = {c}")
        L.append("")
    # management reactions
    acts = []
    def act(on, delay, cmd, args=None, nth=None):
        a = [ "[[actions]]", f'on = "{on}"', f'delay = "{delay}ms"', f'command = "{cmd}"']
        if args: a.append("arguments = {" + ", ".join(f'{k} = {v}' for k, v in args.items()) + "}")
        if nth: a.append(f"nth = {nth}")
        acts.append("\n".join(a))
    d = {"device": '"j"'}
    r = rng.random()
    if r < 0.35:
        act("BLOCK_JOB_ERROR", rng.choice([100, 200]), "query-block-jobs")
        act("BLOCK_JOB_ERROR", rng.choice([300, 400]), "block-job-resume", d)
    elif r < 0.5:
        act("BLOCK_JOB_ERROR", rng.choice([100, 300]), "block-job-cancel", dict(d, force="true") if rng.random() < 0.5 else d)
    elif r < 0.65:
        act("BLOCK_JOB_ERROR", 200, "block-job-resume", d, nth=1)
        act("BLOCK_JOB_ERROR", 200, "block-job-cancel", dict(d, force="true"), nth=2)
    elif r < 0.75:
        act("JOB_STATUS_CHANGE", 0, "query-block-jobs")
    if kind in ("mirror", "mirror-active", "commit-active"):
        rr = rng.random()
        if rr < 0.6:
            act("BLOCK_JOB_READY", rng.choice([0, 100, 300]), "block-job-complete", d)
        elif rr < 0.85:
            act("BLOCK_JOB_READY", rng.choice([0, 100, 300]), "block-job-cancel", d)
    if rng.random() < 0.2:
        acts.append(f'[[actions]]\nat = "{rng.choice([50, 150])}ms"\ncommand = "block-job-pause"\narguments = {{device = "j"}}')
        acts.append(f'[[actions]]\nat = "{rng.choice([400, 700])}ms"\ncommand = "block-job-resume"\narguments = {{device = "j"}}')
    if kind in ("mirror-active", "backup") and rng.random() < 0.4:
        acts.append(f'[[actions]]\nat = "{rng.choice([10, 300])}ms"\ncommand = "guest-burst"\narguments = {{drive = "vda", rw = "write", bs = "64KiB", offset = "{rng.randrange(0, size // MIB) * MIB}", number-ios = 2}}')
    L += acts
    return "\n".join(L) + "\n"


def grammar2(seed):
    rng = random.Random(seed)
    kind = rng.choice(["stream-mid", "mirror", "commit-int", "commit-active", "backup-bitmap",
                       "backup", "mirror-active", "two-jobs"])
    size = 4 * MIB
    L = [f'name = "fz2-{seed}"', f'description = "random differential case {seed} ({kind})"',
         f'duration = "{rng.choice([4, 6])}s"', ""]
    def img(name, backing=None, d=None, extra=()):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + list(extra) + [""])
    speed = rng.choice([0, 0, MIB, 2 * MIB])
    jobs = []
    faults = []   # (node, op)
    if kind == "stream-mid":
        img("base", d=data(rng, size)); img("mid", "base", data(rng, size)); img("top", "mid", data(rng, size))
        drv = {"vda": "top"}
        j = {"type": "stream", "device": "vda"}
        if rng.random() < 0.5:
            j["base"] = "base"   # stream stops at base
        jobs.append(("j", j, ["on-error"]))
        faults = [("base", "read"), ("mid", "read")]
    elif kind in ("mirror", "mirror-active"):
        img("src", d=data(rng, size)); img("dst", extra=[f'discard = "{rng.choice(["ignore", "unmap"])}"'])
        drv = {"vda": "src"}
        j = {"type": "mirror", "device": "vda", "target": "dst", "sync": "full"}
        if kind == "mirror-active": j["copy-mode"] = "write-blocking"
        if rng.random() < 0.3: j["buf-size"] = str(rng.choice([256 * KIB, MIB]))
        jobs.append(("j", j, ["on-source-error", "on-target-error"]))
        faults = [("src", "read"), ("dst", "write"), ("dst", "write-zeroes"), ("dst", "flush")]
    elif kind == "commit-int":
        img("base", d=data(rng, size)); img("mid", "base", data(rng, size)); img("top", "mid", data(rng, size))
        drv = {"vda": "top"}
        jobs.append(("j", {"type": "commit", "device": "vda", "top": "mid", "base": "base"}, ["on-error"]))
        faults = [("mid", "read"), ("base", "write"), ("base", "flush")]
    elif kind == "commit-active":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drv = {"vda": "top"}
        jobs.append(("j", {"type": "commit", "device": "vda", "base": "base"}, ["on-error"]))
        faults = [("top", "read"), ("base", "write"), ("base", "write-zeroes"), ("base", "flush")]
    elif kind == "backup-bitmap":
        ex = extents(rng, size, rng.randint(1, 3))
        dirty = ", ".join(f'{{offset = "{o}", length = "{l}"}}' for o, l in ex)
        img("src", d=data(rng, size), extra=[f'bitmaps = [{{name = "b0", dirty = [{dirty}]}}]'])
        img("tgt")
        drv = {"vda": "src"}
        j = {"type": "backup", "device": "vda", "target": "tgt", "sync": "bitmap", "bitmap": "b0",
             "bitmap-mode": rng.choice(["on-success", "always", "never"])}
        jobs.append(("j", j, ["on-source-error", "on-target-error"]))
        faults = [("src", "read"), ("tgt", "write"), ("tgt", "write-zeroes")]
    elif kind == "backup":
        img("src", d=data(rng, size)); img("tgt")
        drv = {"vda": "src"}
        j = {"type": "backup", "device": "vda", "target": "tgt", "sync": rng.choice(["full", "none"])}
        jobs.append(("j", j, ["on-source-error", "on-target-error"]))
        faults = [("src", "read"), ("tgt", "write"), ("tgt", "write-zeroes"), ("tgt", "flush")]
    else:  # two jobs on two drives
        img("src", d=data(rng, size)); img("dst")
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drv = {"vda": "src", "vdb": "top"}
        jobs.append(("j", {"type": "mirror", "device": "vda", "target": "dst"}, ["on-source-error", "on-target-error"]))
        jobs.append(("k", {"type": "stream", "device": "vdb"}, ["on-error"]))
        faults = [("dst", "write"), ("base", "read"), ("src", "read")]
    for d, i in drv.items():
        L += [f"[drives.{d}]", f'image = "{i}"', ""]
    for jid, j, pols in jobs:
        L.append(f"[jobs.{jid}]")
        for k, v in j.items():
            L.append(f'{k} = "{v}"')
        for p in pols:
            if rng.random() < 0.85:
                L.append(f'{p} = "{rng.choice(POL)}"')
        if speed: L.append(f"speed = {speed}")
        if rng.random() < 0.25:
            L.append("auto-finalize = false")
        if rng.random() < 0.25:
            L.append("auto-dismiss = false")
        L.append("")
    for _ in range(rng.choice([1, 1, 2])):
        node, op = rng.choice(faults)
        L += ["[[faults]]", f'image = "{node}"', f'operation = "{op}"',
              f'errno = "{rng.choice(["EIO", "ENOSPC"])}"']
        if op != "flush":
            L += [f'offset = "{rng.randrange(0, size // (64 * KIB)) * 64 * KIB}"', 'length = "512"']
        if rng.random() < 0.6:
            L.append('count = "once"')
        L.append("")
    for jid, j, pols in jobs:
        A = []
        def act(on, delay, cmd, args=None, match=None, nth=None):
            a = ["[[actions]]", f'on = "{on}"', f'delay = "{delay}ms"', f'command = "{cmd}"']
            if match: a.append("match = {" + ", ".join(f'{k} = "{v}"' for k, v in match.items()) + "}")
            if args: a.append("arguments = {" + ", ".join(f'{k} = {v}' for k, v in args.items()) + "}")
            if nth: a.append(f"nth = {nth}")
            A.append("\n".join(a))
        dev = {"device": f'"{jid}"'}
        def args_for(cmd):
            return dev if cmd.startswith("block-job-") and cmd not in ("block-job-finalize", "block-job-dismiss") else ident
        ident = {"id": f'"{jid}"'}
        em = {"device": jid}
        r = rng.random()
        if r < 0.3:
            act("BLOCK_JOB_ERROR", rng.choice([100, 300]), "query-block-jobs", match=em)
            c = rng.choice(["block-job-resume", "job-resume"])
            act("BLOCK_JOB_ERROR", rng.choice([400, 600]), c, args_for(c), match=em)
        elif r < 0.45:
            c = rng.choice(["block-job-cancel", "job-cancel"])
            act("BLOCK_JOB_ERROR", 200, c, args_for(c), match=em)
        elif r < 0.55:
            act("BLOCK_JOB_ERROR", 200, "block-job-set-speed", {"device": f'"{jid}"', "speed": 4 * MIB}, match=em)
            act("BLOCK_JOB_ERROR", 300, "block-job-resume", dev, match=em)
        if "auto-finalize" in "\n".join(L):
            act("JOB_STATUS_CHANGE", rng.choice([0, 100]), "query-block-jobs", match={"id": jid, "status": "pending"})
            act("JOB_STATUS_CHANGE", rng.choice([200]), rng.choice(["block-job-finalize", "job-finalize"]), ident, match={"id": jid, "status": "pending"})
        if "auto-dismiss" in "\n".join(L):
            act("JOB_STATUS_CHANGE", 200, rng.choice(["block-job-dismiss", "job-dismiss"]), ident, match={"id": jid, "status": "concluded"})
        if j["type"] in ("mirror",) or (j["type"] == "commit" and "top" not in j):
            rr = rng.random()
            if rr < 0.5:
                c = rng.choice(["block-job-complete", "job-complete"])
                act("BLOCK_JOB_READY", rng.choice([0, 200]), c, args_for(c), match=em)
            elif rr < 0.75:
                act("BLOCK_JOB_READY", 200, "block-job-cancel", dev, match=em)
                act("BLOCK_JOB_READY", 250, "query-block-jobs", match=em)
        if speed and rng.random() < 0.4:
            A.append(f'[[actions]]\nat = "{rng.choice([500, 1500])}ms"\ncommand = "block-job-set-speed"\narguments = {{device = "{jid}", speed = {rng.choice([0, 512 * KIB, 8 * MIB])}}}')
        L += A
    return "\n".join(L) + "\n"


def grammar3(seed):
    rng = random.Random(seed)
    kind = rng.choice(["mirror-active", "backup-cbw", "backup-cbw", "commit-active", "mirror-bg", "threshold"])
    size = 4 * MIB
    L = [f'name = "fz3-{seed}"', f'description = "random differential case {seed} ({kind})"',
         'duration = "3s"', ""]
    def img(name, backing=None, d=None):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + [""])
    werror = rng.choice(["report", "ignore"])
    faults, job, pols = [], None, []
    if kind in ("mirror-active", "mirror-bg"):
        img("src", d=data(rng, size)); img("dst")
        drive = "src"
        job = {"type": "mirror", "target": "dst", "sync": rng.choice(["full", "none"]),
               "copy-mode": "write-blocking" if kind == "mirror-active" else "background"}
        pols = ["on-source-error", "on-target-error"]; faults = [("dst", "write"), ("src", "read")]
    elif kind == "backup-cbw":
        img("src", d=data(rng, size)); img("tgt")
        drive = "src"
        job = {"type": "backup", "target": "tgt", "sync": rng.choice(["full", "none", "top"]),
               "speed": rng.choice([64 * KIB, 256 * KIB])}
        pols = ["on-source-error", "on-target-error"]; faults = [("tgt", "write"), ("src", "read")]
    elif kind == "commit-active":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drive = "top"
        job = {"type": "commit", "base": "base"}
        pols = ["on-error"]; faults = [("base", "write"), ("top", "read")]
    else:
        img("disk", d=data(rng, size))
        drive = "disk"
    L += ["[drives.vda]", f'image = "{drive}"', f'werror = "{werror}"', ""]
    if job:
        L += ["[jobs.j]", 'device = "vda"'] + [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in job.items()]
        for p in pols:
            if rng.random() < 0.8:
                L.append(f'{p} = "{rng.choice(POL)}"')
        L.append("")
        for _ in range(rng.choice([1, 1, 2])):
            node, op = rng.choice(faults)
            L += ["[[faults]]", f'image = "{node}"', f'operation = "{op}"',
                  f'errno = "{rng.choice(["EIO", "ENOSPC"])}"',
                  f'offset = "{rng.randrange(0, size // (64 * KIB)) * 64 * KIB}"', 'length = "512"']
            if rng.random() < 0.6:
                L.append('count = "once"')
            L.append("")
    acts = []
    t = 200
    if kind == "threshold":
        node = "disk"
        acts.append(f'[[actions]]\nat = "0s"\ncommand = "block-set-write-threshold"\narguments = {{node-name = "{node}", write-threshold = {rng.randrange(1, 64) * 64 * KIB}}}')
    for _ in range(rng.randint(1, 4)):
        off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        bs = rng.choice([4 * KIB, 64 * KIB])
        acts.append(f'[[actions]]\nat = "{t}ms"\ncommand = "guest-burst"\narguments = {{drive = "vda", rw = "write", bs = "{bs}", offset = {off}, number-ios = 1}}')
        t += rng.choice([200, 300])
    if job:
        acts.append(f'[[actions]]\nat = "{t + 100}ms"\ncommand = "query-block-jobs"')
        if job["type"] in ("mirror",) or (job["type"] == "commit"):
            acts.append(f'[[actions]]\nat = "{t + 300}ms"\ncommand = "block-job-{rng.choice(["complete", "cancel"])}"\narguments = {{device = "j"}}')
        else:
            acts.append(f'[[actions]]\nat = "{t + 300}ms"\ncommand = "block-job-cancel"\narguments = {{device = "j"}}')
    else:
        acts.append(f'[[actions]]\nat = "{t + 100}ms"\ncommand = "query-named-block-nodes"')
    L += acts
    return "\n".join(L) + "\n"


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(_toml, v)) + "]"
    return f'"{v}"'


class _Script:
    """The ``[[actions]]`` of a case, one table each."""

    def __init__(self):
        self.tables = []

    def on(self, event, delay, command, args=None, match=None, nth=None, after=None,
           after_match=None, repeat=False):
        a = ["[[actions]]", f'on = "{event}"', f'delay = "{delay}ms"', f'command = "{command}"']
        if match:
            a.append("match = {" + ", ".join(f"{k} = {_toml(v)}" for k, v in match.items()) + "}")
        if nth:
            a.append(f"nth = {nth}")
        if after:
            a.append(f'after = "{after}"')
        if after_match:
            a.append("after-match = {" + ", ".join(f"{k} = {_toml(v)}" for k, v in after_match.items()) + "}")
        if repeat:
            a.append("repeat = true")
        if args:
            a.append("arguments = {" + ", ".join(f"{k} = {_toml(v)}" for k, v in args.items()) + "}")
        self.tables.append("\n".join(a))

    def at(self, ms, command, args=None):
        a = ["[[actions]]", f'at = "{ms}ms"', f'command = "{command}"']
        if args:
            a.append("arguments = {" + ", ".join(f"{k} = {_toml(v)}" for k, v in args.items()) + "}")
        self.tables.append("\n".join(a))


def _manual_end(L, rng, fin, dis):
    """``auto-finalize = false`` with probability ``fin`` (None: never, no
    draw), then ``auto-dismiss = false`` with ``dis``: whether each was set."""
    manual_fin = fin is not None and rng.random() < fin
    manual_dis = rng.random() < dis
    if manual_fin:
        L.append("auto-finalize = false")
    if manual_dis:
        L.append("auto-dismiss = false")
    return manual_fin, manual_dis


def _fault(L, rng, node, op, size, errno=None, count=None, offset=None):
    L += ["[[faults]]", f'image = "{node}"', f'operation = "{op}"',
          f'errno = "{errno or rng.choice(["EIO", "EIO", "ENOSPC"])}"']
    if op != "flush":
        off = offset if offset is not None else rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        L += [f'offset = "{off}"', 'length = "512"']
    if count:
        L.append(f'count = "{count}"')
    L.append("")


def grammar4(seed):
    """Management scripts around error pauses: several reactions (``nth``,
    ``after``, ``repeat``), stop -> resume cycles under persistent or
    counted faults (two ``once`` rules on one sector fail it twice),
    pause / resume / set-speed / cancel (plain, forced, ``job-cancel``) of a
    job paused by an error or by the user, complete before READY, manual
    finalize and dismiss with errors and cancels, enospc with ENOSPC and
    EIO."""
    rng = random.Random(seed)
    kind = rng.choice(["mirror", "mirror", "mirror-active", "commit-active", "commit-int",
                       "stream", "backup"])
    size = 4 * MIB
    L = [f'name = "fz4-{seed}"', f'description = "random differential case {seed} ({kind})"',
         f'duration = "{rng.choice([5, 6])}s"', ""]

    def img(name, backing=None, d=None):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + [""])

    if kind.startswith("mirror"):
        img("src", d='"full"' if rng.random() < 0.5 else data(rng, size)); img("dst")
        drive = "src"
        job = {"type": "mirror", "target": "dst", "sync": "full"}
        if kind == "mirror-active":
            job["copy-mode"] = "write-blocking"
        pols = ["on-source-error", "on-target-error"]
        nodes = [("src", "read"), ("dst", "write"), ("dst", "write"), ("dst", "flush")]
        ready = True
    elif kind == "commit-active":
        img("base", d=data(rng, size)); img("top", "base", '"full"')
        drive = "top"; job = {"type": "commit", "base": "base"}
        pols = ["on-error"]; nodes = [("top", "read"), ("base", "write"), ("base", "write")]
        ready = True
    elif kind == "commit-int":
        img("base", d=data(rng, size)); img("mid", "base", '"full"'); img("top", "mid", data(rng, size))
        drive = "top"; job = {"type": "commit", "top": "mid", "base": "base"}
        pols = ["on-error"]; nodes = [("mid", "read"), ("base", "write"), ("base", "write")]
        ready = False
    elif kind == "stream":
        img("base", d='"full"'); img("top", "base", data(rng, size))
        drive = "top"; job = {"type": "stream"}
        pols = ["on-error"]; nodes = [("base", "read")]
        ready = False
    else:
        img("src", d='"full"'); img("tgt")
        drive = "src"; job = {"type": "backup", "target": "tgt", "sync": "full"}
        pols = ["on-source-error", "on-target-error"]; nodes = [("src", "read"), ("tgt", "write")]
        ready = False
    L += ["[drives.vda]", f'image = "{drive}"', ""]
    # the policy: mostly stop (the pauses are what the scripts act on)
    policy = rng.choice(["stop", "stop", "stop", "enospc", "enospc", "report", "ignore"])
    L += ["[jobs.j]", 'device = "vda"'] + [f"{k} = {_toml(v)}" for k, v in job.items()]
    for p in pols:
        L.append(f'{p} = "{policy if rng.random() < 0.8 else rng.choice(POL)}"')
    speed = rng.choice([1, 1, 2]) * MIB
    L.append(f"speed = {speed}")
    if kind.startswith("mirror") and rng.random() < 0.4:
        L.append(f'granularity = "{rng.choice([65536, 131072, 262144])}"')
    if kind.startswith("mirror") and rng.random() < 0.3:
        L.append(f'buf-size = "{rng.choice([512 * KIB, MIB, 2 * MIB])}"')
    manual_fin, manual_dis = _manual_end(L, rng, 0.3, 0.3)
    L.append("")
    # faults: a persistent one, one once, or two once rules on one sector
    # (it fails twice), on one or two nodes; errno 28 or 5
    shape = rng.choice(["persistent", "once", "twice", "two-nodes"])
    node, op = rng.choice(nodes)
    errno = rng.choice(["EIO", "ENOSPC"])
    off = rng.randrange(1, size // (64 * KIB)) * 64 * KIB
    if shape == "persistent":
        _fault(L, rng, node, op, size, errno, None, off)
    elif shape == "once":
        _fault(L, rng, node, op, size, errno, "once", off)
    elif shape == "twice":
        _fault(L, rng, node, op, size, errno, "once", off)
        _fault(L, rng, node, op, size, errno, "once", off)
    else:
        _fault(L, rng, node, op, size, errno, "once", off)
        node2, op2 = rng.choice(nodes)
        _fault(L, rng, node2, op2, size, rng.choice(["EIO", "ENOSPC"]), "once")
    S = _Script()
    dev = {"device": "j"}
    ident = {"id": "j"}
    em = {"device": "j"}
    script = rng.choice(["resume-then-cancel", "resume-each-then-force", "pause-while-error",
                         "set-speed-while-error", "cancel-while-error", "user-pause-cycle",
                         "complete-early", "after-paused", "query-cycle"])
    if script == "resume-then-cancel":
        S.on("BLOCK_JOB_ERROR", rng.choice([150, 300]), "block-job-resume", dev, match=em, nth=1)
        S.on("BLOCK_JOB_ERROR", rng.choice([150, 300]), "block-job-cancel",
             dict(dev, force=True) if rng.random() < 0.6 else dev, match=em, nth=2)
        S.on("BLOCK_JOB_ERROR", 450, "query-block-jobs", match=em, nth=2)
    elif script == "resume-each-then-force":
        S.on("BLOCK_JOB_ERROR", 200, rng.choice(["block-job-resume", "job-resume"]), None, match=em, repeat=True)
        S.on("BLOCK_JOB_ERROR", 100, "block-job-cancel", dict(dev, force=True), match=em, nth=3)
    elif script == "pause-while-error":
        S.on("BLOCK_JOB_ERROR", 150, rng.choice(["block-job-pause", "job-pause"]), None, match=em)
        S.on("BLOCK_JOB_ERROR", 250, "query-block-jobs", match=em)
        S.on("BLOCK_JOB_ERROR", 350, rng.choice(["block-job-resume", "job-resume"]), None, match=em)
        S.on("BLOCK_JOB_ERROR", 450, rng.choice(["block-job-resume", "query-block-jobs"]), None, match=em)
    elif script == "set-speed-while-error":
        S.on("BLOCK_JOB_ERROR", 150, "block-job-set-speed", dict(dev, speed=rng.choice([0, 512 * KIB, 8 * MIB])), match=em)
        S.on("BLOCK_JOB_ERROR", 250, "query-block-jobs", match=em)
        S.on("BLOCK_JOB_ERROR", 350, "block-job-resume", dev, match=em)
    elif script == "cancel-while-error":
        c = rng.choice(["plain", "force", "job-cancel", "plain-then-force"])
        if c == "plain":
            S.on("BLOCK_JOB_ERROR", 150, "block-job-cancel", dev, match=em)
            S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", dev, match=em)
        elif c == "force":
            S.on("BLOCK_JOB_ERROR", 150, "block-job-cancel", dict(dev, force=True), match=em)
        elif c == "job-cancel":
            S.on("BLOCK_JOB_ERROR", 150, "job-cancel", ident, match=em)
        else:
            S.on("BLOCK_JOB_ERROR", 150, "block-job-cancel", dev, match=em)
            S.on("BLOCK_JOB_ERROR", 300, "block-job-cancel", dict(dev, force=True), match=em)
        S.on("BLOCK_JOB_ERROR", 500, "query-block-jobs", match=em)
    elif script == "user-pause-cycle":
        t0 = rng.choice([300, 800])
        S.at(t0, rng.choice(["block-job-pause", "job-pause"]))
        S.at(t0 + 200, "query-block-jobs")
        c = rng.choice(["resume", "cancel", "force", "set-speed", "complete"])
        if c == "resume":
            S.at(t0 + 400, "block-job-resume", dev)
        elif c == "cancel":
            S.at(t0 + 400, "block-job-cancel", dev)
            S.at(t0 + 600, "block-job-resume", dev)
        elif c == "force":
            S.at(t0 + 400, "block-job-cancel", dict(dev, force=True))
        elif c == "set-speed":
            S.at(t0 + 400, "block-job-set-speed", dict(dev, speed=4 * MIB))
            S.at(t0 + 500, "block-job-resume", dev)
        else:
            S.at(t0 + 400, "block-job-complete", dev)
            S.at(t0 + 500, "block-job-resume", dev)
        # an error policy reaction as well
        S.on("BLOCK_JOB_ERROR", 200, "block-job-resume", dev, match=em, repeat=rng.random() < 0.5)
    elif script == "complete-early":
        S.at(rng.choice([200, 500]), rng.choice(["block-job-complete", "job-complete"]), None)
        S.on("BLOCK_JOB_ERROR", 200, "block-job-complete", dev, match=em)
        S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", dev, match=em, repeat=True)
    elif script == "after-paused":
        S.on("BLOCK_JOB_ERROR", 200, "block-job-resume", dev, match=em)
        S.on("BLOCK_JOB_ERROR", rng.choice([100, 250]), "block-job-cancel",
             dict(dev, force=rng.random() < 0.5), match=em, after="JOB_STATUS_CHANGE",
             after_match={"status": "running"})
        S.on("BLOCK_JOB_ERROR", 400, "block-job-cancel", dict(dev, force=True), match=em, nth=2)
    else:   # query-cycle
        S.on("JOB_STATUS_CHANGE", 100, "query-block-jobs", match={"id": "j", "status": "paused"}, repeat=True)
        S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", dev, match=em, repeat=True)
        S.at(rng.choice([2500, 3500]), "block-job-cancel", dict(dev, force=True))
    # commands fill the arguments of the commands left open above
    fixed = []
    for t in S.tables:
        if "arguments" not in t and 'command = "query' not in t:
            cmd = t.split('command = "')[1].split('"')[0]
            t += "\narguments = " + ("{device = \"j\"}" if cmd.startswith("block-job-") else "{id = \"j\"}")
        fixed.append(t)
    S.tables = fixed
    if ready:
        rr = rng.random()
        if rr < 0.5:
            S.on("BLOCK_JOB_READY", rng.choice([100, 300]), "block-job-complete", dev, match=em)
        elif rr < 0.75:
            S.on("BLOCK_JOB_READY", 200, "block-job-cancel", dev, match=em)
        elif rr < 0.9:
            S.on("BLOCK_JOB_READY", 200, "job-cancel", ident, match=em)
    if manual_fin:
        S.on("JOB_STATUS_CHANGE", 100, "query-block-jobs", match={"id": "j", "status": "pending"})
        r = rng.random()
        if r < 0.6:
            S.on("JOB_STATUS_CHANGE", 200, rng.choice(["block-job-finalize", "job-finalize"]), ident,
                 match={"id": "j", "status": "pending"})
        elif r < 0.8:
            S.on("JOB_STATUS_CHANGE", 200, rng.choice(["block-job-cancel", "job-cancel"]), None,
                 match={"id": "j", "status": "pending"})
            S.tables[-1] += "\narguments = " + ("{device = \"j\"}" if "block-job" in S.tables[-1] else "{id = \"j\"}")
            S.on("JOB_STATUS_CHANGE", 300, "block-job-finalize", ident, match={"id": "j", "status": "pending"})
    if manual_dis:
        S.on("JOB_STATUS_CHANGE", 100, "query-block-jobs", match={"id": "j", "status": "concluded"})
        S.on("JOB_STATUS_CHANGE", 150, rng.choice(["block-job-cancel", "block-job-resume"]), dev,
             match={"id": "j", "status": "concluded"})
        S.on("JOB_STATUS_CHANGE", 250, rng.choice(["block-job-dismiss", "job-dismiss"]), ident,
             match={"id": "j", "status": "concluded"})
    L += S.tables
    return "\n".join(L) + "\n"


def grammar5(seed):
    """Chains of three or four layers: stream with a base over them and
    faults in the intermediate layers (and below the base), intermediate
    commit with faults on top, intermediate and base layers, active commit
    over a chain, mirror sync=top over a chain with granularity, buf-size and
    speed; one-shot faults on several nodes at once, ENOSPC or EIO under
    enospc/auto."""
    rng = random.Random(seed)
    kind = rng.choice(["stream", "stream", "commit-int", "commit-int", "commit-active", "mirror-top"])
    size = 4 * MIB
    L = [f'name = "fz5-{seed}"', f'description = "random differential case {seed} ({kind})"',
         f'duration = "{rng.choice([5, 6])}s"', ""]

    def img(name, backing=None, d=None):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + [""])

    depth = rng.choice([3, 4])
    names = ["base", "m1", "m2", "top"] if depth == 4 else ["base", "m1", "top"]
    prev = None
    for n in names:
        img(n, prev, data(rng, size)); prev = n
    L += ["[drives.vda]", 'image = "top"', ""]
    job = {}
    lower = names[:-1]
    if kind == "stream":
        job = {"type": "stream"}
        b = rng.choice([None] + lower[:-1])
        if b:
            job["base"] = b
        pols = ["on-error"]
        nodes = [(n, "read") for n in lower]
    elif kind == "commit-int":
        top = rng.choice(lower[1:])
        base = rng.choice(lower[:lower.index(top)])
        job = {"type": "commit", "top": top, "base": base}
        pols = ["on-error"]
        between = lower[lower.index(base) + 1:lower.index(top) + 1]
        nodes = [(n, "read") for n in between] + [(base, "write"), (base, "write"), (base, "flush")]
        nodes += [(lower[0], "read")] if base != lower[0] else []
    elif kind == "commit-active":
        base = rng.choice(lower)
        job = {"type": "commit", "base": base}
        pols = ["on-error"]
        nodes = [("top", "read"), (base, "write"), (base, "write"), (base, "flush")]
        nodes += [(n, "read") for n in lower[lower.index(base) + 1:]]
    else:
        img("dst", lower[-1])
        job = {"type": "mirror", "target": "dst", "sync": "top"}
        pols = ["on-source-error", "on-target-error"]
        nodes = [("top", "read"), ("dst", "write"), ("dst", "write")] + [(n, "read") for n in lower]
    pol = rng.choice(["stop", "stop", "enospc", "auto", "report", "ignore"])
    L += ["[jobs.j]", 'device = "vda"'] + [f"{k} = {_toml(v)}" for k, v in job.items()]
    for p in pols:
        L.append(f'{p} = "{pol if rng.random() < 0.7 else rng.choice(POL + ["auto"])}"')
    L.append(f"speed = {rng.choice([1, 2, 4]) * MIB}")
    if kind == "mirror-top":
        if rng.random() < 0.5:
            L.append(f'granularity = "{rng.choice([4096, 65536, 262144, 1048576])}"')
        if rng.random() < 0.5:
            L.append(f'buf-size = "{rng.choice([256 * KIB, MIB, 4 * MIB])}"')
    if rng.random() < 0.2:
        L.append("auto-finalize = false")
    L.append("")
    for _ in range(rng.choice([1, 2, 2, 3])):
        node, op = rng.choice(nodes)
        _fault(L, rng, node, op, size, None, rng.choice(["once", "once", None]))
    S = _Script()
    dev = {"device": "j"}
    em = {"device": "j"}
    S.on("BLOCK_JOB_ERROR", 150, "query-block-jobs", match=em, repeat=rng.random() < 0.5)
    r = rng.random()
    if r < 0.6:
        S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", dev, match=em, repeat=True)
        S.on("BLOCK_JOB_ERROR", 100, "block-job-cancel", dict(dev, force=True), match=em, nth=4)
    elif r < 0.8:
        S.on("BLOCK_JOB_ERROR", 300, "block-job-cancel", dict(dev, force=rng.random() < 0.5), match=em)
    if kind in ("commit-active", "mirror-top"):
        S.on("BLOCK_JOB_READY", rng.choice([100, 300]), rng.choice(["block-job-complete", "block-job-cancel"]), dev, match=em)
    if "auto-finalize = false" in L:
        S.on("JOB_STATUS_CHANGE", 200, "block-job-finalize", {"id": "j"}, match={"id": "j", "status": "pending"})
    L += S.tables
    return "\n".join(L) + "\n"


VERBS6 = [("block-job-pause", "device"), ("block-job-resume", "device"),
          ("block-job-cancel", "device"), ("block-job-cancel-force", "device"),
          ("block-job-complete", "device"), ("block-job-set-speed", "device"),
          ("block-job-finalize", "id"), ("block-job-dismiss", "id"), ("job-pause", "id"),
          ("job-resume", "id"), ("job-cancel", "id"), ("job-complete", "id"),
          ("job-finalize", "id"), ("job-dismiss", "id"), ("query-block-jobs", None)]
# (no job-start among them: a job started again after its dismissal is a new
# job with the same ID on QEMU, where blocksim's scenario has one job per ID)


def grammar6(seed):
    """Jobs' verbs in each status that lasts: created (a manual start),
    paused by an error, paused by the user, ready, standby, pending (manual
    finalize) and concluded (manual dismiss); two to four random verbs a
    status, 100-300 ms after it began, each followed by a query."""
    rng = random.Random(seed)
    kind = rng.choice(["mirror", "mirror", "commit-active", "commit-int", "stream", "backup"])
    size = 4 * MIB
    L = [f'name = "fz6-{seed}"', f'description = "random differential case {seed} ({kind})"',
         'duration = "5s"', ""]

    def img(name, backing=None, d=None):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + [""])

    if kind == "mirror":
        img("src", d='"full"'); img("dst")
        drive, job, pol, fnode = "src", {"type": "mirror", "target": "dst", "sync": "full"}, "on-target-error", ("dst", "write")
    elif kind == "commit-active":
        img("base"); img("top", "base", '"full"')
        drive, job, pol, fnode = "top", {"type": "commit", "base": "base"}, "on-error", ("base", "write")
    elif kind == "commit-int":
        img("base"); img("mid", "base", '"full"'); img("top", "mid")
        drive, job, pol, fnode = "top", {"type": "commit", "top": "mid", "base": "base"}, "on-error", ("base", "write")
    elif kind == "stream":
        img("base", d='"full"'); img("top", "base")
        drive, job, pol, fnode = "top", {"type": "stream"}, "on-error", ("base", "read")
    else:
        img("src", d='"full"'); img("tgt")
        drive, job, pol, fnode = "src", {"type": "backup", "target": "tgt", "sync": "full"}, "on-target-error", ("tgt", "write")
    L += ["[drives.vda]", f'image = "{drive}"', ""]
    L += ["[jobs.j]", 'device = "vda"'] + [f"{k} = {_toml(v)}" for k, v in job.items()]
    L.append(f'{pol} = "stop"')
    L.append(f"speed = {rng.choice([1, 2]) * MIB}")
    manual = rng.random() < 0.4
    if manual:
        L.append('start = "manual"')
    L.append("auto-finalize = false")
    L.append("auto-dismiss = false")
    L.append("")
    if rng.random() < 0.7:
        _fault(L, rng, fnode[0], fnode[1], size, "EIO", "once", rng.randrange(4, 48) * 64 * KIB)
    S = _Script()

    def verbs(on, match, t0):
        t = t0
        for _ in range(rng.randint(2, 4)):
            cmd, key = rng.choice(VERBS6)
            args = None
            if cmd == "block-job-cancel-force":
                cmd, args = "block-job-cancel", {"device": "j", "force": True}
            elif cmd == "block-job-set-speed":
                args = {"device": "j", "speed": rng.choice([0, 512 * KIB, 4 * MIB])}
            elif key:
                args = {key: "j"}
            if on:
                S.on(on, t, cmd, args, match=match)
                S.on(on, t + 20, "query-block-jobs", match=match)
            else:
                S.at(t, cmd, args)
                S.at(t + 20, "query-block-jobs")
            t += rng.choice([60, 100])
        return t

    t = 100
    if manual:
        t = verbs(None, None, 100)
        S.at(t + 100, "job-start", {"id": "j"})
    else:
        if rng.random() < 0.3:
            verbs(None, None, rng.choice([300, 600]))
    verbs("BLOCK_JOB_ERROR", {"device": "j"}, 150)
    S.on("BLOCK_JOB_ERROR", 900, "block-job-resume", {"device": "j"}, match={"device": "j"})
    if kind in ("mirror", "commit-active"):
        verbs("BLOCK_JOB_READY", {"device": "j"}, 100)
        S.on("BLOCK_JOB_READY", 700, "block-job-complete", {"device": "j"}, match={"device": "j"})
    verbs("JOB_STATUS_CHANGE", {"id": "j", "status": "pending"}, 100)
    S.on("JOB_STATUS_CHANGE", 600, "job-finalize", {"id": "j"}, match={"id": "j", "status": "pending"})
    verbs("JOB_STATUS_CHANGE", {"id": "j", "status": "concluded"}, 100)
    S.on("JOB_STATUS_CHANGE", 600, "job-dismiss", {"id": "j"}, match={"id": "j", "status": "concluded"})
    L += S.tables
    return "\n".join(L) + "\n"


BITMAP_VERBS7 = ["add-new", "add-dup", "add-bad-granularity", "add-persistent", "add-disabled",
                 "remove", "remove", "clear", "clear", "enable", "disable", "remove-missing"]


def grammar7(seed):
    """Dirty bitmaps and incremental backups, as libvirt's checkpoints use
    them: an image with one or two bitmaps (a disabled one at times, a
    granularity other than the default), a backup with a bitmap (sync
    bitmap / incremental / full / top, each ``bitmap-mode`` it accepts)
    under target faults (write, write-zeroes, flush; once or persistent)
    with a policy and a reaction (resume, cancel, forced cancel), manual
    finalize with a finalize or a cancel while pending; a second backup of
    the same bitmap (the retry after a failure or a cancel, or one started
    while the first holds the bitmap); bitmap commands (add, a duplicate
    add, a bad granularity, persistent, disabled, remove, clear, enable,
    disable, a missing bitmap) at times and on the jobs' events; guest
    writes during and after the job (they mark the bitmap, or its
    successor while the job has it frozen)."""
    rng = random.Random(seed)
    size = 4 * MIB
    L = [f'name = "fz7-{seed}"', f'description = "random differential case {seed} (bitmaps)"',
         f'duration = "{rng.choice([4, 5])}s"', ""]
    ex = extents(rng, size, rng.randint(1, 3))
    dirty = ", ".join(f'{{offset = "{o}", length = "{n}"}}' for o, n in ex)
    gran = rng.choice([None, None, 65536, 131072, 32768])
    bms = [f'{{name = "b0", dirty = [{dirty}]' + (f', granularity = "{gran}"' if gran else "") + "}"]
    two = rng.random() < 0.4
    if two:
        ex1 = extents(rng, size, rng.randint(1, 2))
        d1 = ", ".join(f'{{offset = "{o}", length = "{n}"}}' for o, n in ex1)
        bms.append(f'{{name = "b1", dirty = [{d1}], recording = {_toml(rng.random() < 0.5)}}}')
    L += ["[images.src]", f'size = "{size}"', f"data = {data(rng, size)}",
          f"bitmaps = [{', '.join(bms)}]", ""]
    L += ["[images.tgt]", f'size = "{size}"', ""]
    L += ["[images.tgt2]", f'size = "{size}"', ""]
    L += ["[drives.vda]", 'image = "src"', 'werror = "report"', ""]
    bitmap = "b1" if two and rng.random() < 0.3 else "b0"
    sync = rng.choice(["bitmap", "bitmap", "bitmap", "incremental", "full", "top"])
    job = {"type": "backup", "device": "vda", "target": "tgt", "sync": sync, "bitmap": bitmap}
    if sync == "bitmap":
        job["bitmap-mode"] = rng.choice(["on-success", "always", "never"])
    elif sync in ("full", "top"):
        job["bitmap-mode"] = rng.choice(["on-success", "always"])
    policy = rng.choice(["report", "report", "stop", "ignore", "enospc"])
    L += ["[jobs.j]"] + [f"{k} = {_toml(v)}" for k, v in job.items()]
    L.append(f'on-target-error = "{policy}"')
    L.append(f"speed = {rng.choice([256 * KIB, 512 * KIB, MIB])}")
    manual_fin = rng.random() < 0.25
    if manual_fin:
        L.append("auto-finalize = false")
    L.append("")
    retry = rng.random()
    if retry < 0.55:
        k = {"type": "backup", "device": "vda", "target": "tgt2", "bitmap": bitmap}
        ksync = rng.choice(["bitmap", "incremental", "full"])
        k["sync"] = ksync
        if ksync == "bitmap":
            k["bitmap-mode"] = rng.choice(["on-success", "always", "never"])
        elif ksync == "full":
            k["bitmap-mode"] = rng.choice(["on-success", "always"])
        L += ["[jobs.k]"] + [f"{a} = {_toml(v)}" for a, v in k.items()]
        L += [f"speed = {rng.choice([512 * KIB, 2 * MIB])}", 'start = "manual"', ""]
    for _ in range(rng.choice([0, 1, 1, 2])):
        op = rng.choice(["write", "write", "write-zeroes", "flush"])
        off = rng.choice([o for o, _n in ex]) if op != "flush" and rng.random() < 0.7 else None
        _fault(L, rng, "tgt", op, size, None, rng.choice(["once", "once", None]), off)
    S = _Script()
    em = {"device": "j"}
    r = rng.random()
    if r < 0.3:
        S.on("BLOCK_JOB_ERROR", 200, "query-block-jobs", match=em)
        S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", {"device": "j"}, match=em, repeat=True)
        S.on("BLOCK_JOB_ERROR", 100, "block-job-cancel", {"device": "j", "force": True}, match=em, nth=3)
    elif r < 0.55:
        S.on("BLOCK_JOB_ERROR", 200, "block-job-cancel", {"device": "j", "force": rng.random() < 0.5}, match=em)
    elif r < 0.7:
        S.at(rng.choice([300, 700, 1200]), rng.choice(["block-job-cancel", "job-cancel"]), None)
        S.tables[-1] += "\narguments = " + ('{device = "j"}' if "block-job" in S.tables[-1] else '{id = "j"}')
    if manual_fin:
        S.on("JOB_STATUS_CHANGE", 100, "block-dirty-bitmap-remove", {"node": "src", "name": bitmap},
             match={"id": "j", "status": "pending"})
        if rng.random() < 0.6:
            S.on("JOB_STATUS_CHANGE", 200, "job-finalize", {"id": "j"}, match={"id": "j", "status": "pending"})
        else:
            S.on("JOB_STATUS_CHANGE", 200, "job-cancel", {"id": "j"}, match={"id": "j", "status": "pending"})
    if retry < 0.35:
        # the retry once the first has gone
        S.on("JOB_STATUS_CHANGE", rng.choice([100, 300]), "job-start", {"id": "k"},
             match={"id": "j", "status": "null"})
    elif retry < 0.55:
        # while the first holds the bitmap (refused: busy), or after it
        S.at(rng.choice([200, 600, 2500]), "job-start", {"id": "k"})
    # bitmap commands
    names = ["b0"] + (["b1"] if two else [])
    for _ in range(rng.randint(1, 4)):
        v = rng.choice(BITMAP_VERBS7)
        name = rng.choice(names)
        if v == "add-new":
            args = {"node": "src", "name": "b2"}
        elif v == "add-dup":
            args = {"node": "src", "name": name}
        elif v == "add-bad-granularity":
            args = {"node": "src", "name": "b3", "granularity": rng.choice([256, 1000, 3 * 65536])}
        elif v == "add-persistent":
            args = {"node": rng.choice(["src", "tgt"]), "name": "p0", "persistent": True}
        elif v == "add-disabled":
            args = {"node": "src", "name": "d0", "disabled": True}
        elif v == "remove-missing":
            args = {"node": "src", "name": "nosuch"}
        else:
            args = {"node": "src", "name": rng.choice(names + ["b2"])}
        cmd = "block-dirty-bitmap-" + ("add" if v.startswith("add") else v.split("-")[0])
        w = rng.random()
        if w < 0.35:
            S.at(rng.choice([0, 100, 400, 900, 2000, 3500]), cmd, args)
        elif w < 0.65:
            S.on("JOB_STATUS_CHANGE", rng.choice([0, 50, 150]), cmd, args, match={"id": "j", "status": "running"})
        elif w < 0.8:
            S.on("BLOCK_JOB_ERROR", 100, cmd, args, match=em)
        else:
            S.on("JOB_STATUS_CHANGE", rng.choice([0, 100]), cmd, args, match={"id": "j", "status": "null"})
    # guest writes
    for _ in range(rng.choice([0, 0, 1, 2])):
        off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        S.at(rng.choice([50, 300, 800, 1500, 3000]), "guest-burst",
             {"drive": "vda", "rw": "write", "bs": rng.choice(["4KiB", "64KiB"]), "offset": off,
              "number-ios": rng.choice([1, 2])})
    L += S.tables
    return "\n".join(L) + "\n"


def _chain_job(rng, kind, names):
    """A job of ``kind`` on the chain ``names`` (bottom first, the drive's
    image last): its keys and the nodes it reads and writes."""
    lower = names[:-1]
    if kind == "stream":
        job = {"type": "stream"}
        b = rng.choice([None, None] + lower[:-1])
        if b:
            job["base"] = b
        return job, ["on-error"], {"write": [names[-1] + "-file"], "target": None}
    if kind == "commit-int":
        top = rng.choice(lower[1:])
        base = rng.choice(lower[:lower.index(top)])
        return ({"type": "commit", "top": top, "base": base}, ["on-error"],
                {"write": [base], "target": base})
    if kind == "commit-active":
        base = rng.choice(lower)
        return {"type": "commit", "base": base}, ["on-error"], {"write": [base], "target": base}
    if kind == "mirror":
        # one copy at a time (buf-size 1 MiB): with several in flight, which
        # write reaches the target first (a threshold's amount) is a race
        return ({"type": "mirror", "target": "dst", "sync": "full", "buf-size": "1MiB"},
                ["on-source-error", "on-target-error"], {"write": ["dst", "dst-file"], "target": "dst"})
    return ({"type": "backup", "target": "tgt", "sync": rng.choice(["full", "top", "none"])},
            ["on-source-error", "on-target-error"], {"write": ["tgt", "tgt-file"], "target": "tgt"})


def grammar8(seed):
    """Two jobs on one chain (libvirt's block jobs on one disk: a stream
    and a commit, a commit and a mirror, a backup under a mirror, ...):
    the second started while the first runs, is ready, is paused by an
    error, waits to be finalized or has concluded, so that it is accepted
    or refused by the first's op blockers, filter or held nodes (the QMP
    error class and text of each refusal are compared); write thresholds
    on the nodes the jobs write (a commit's base, a mirror's or backup's
    target, their protocol nodes, the top's protocol node under a
    stream's copy-on-read) and guest writes through them."""
    rng = random.Random(seed)
    size = 4 * MIB
    names = ["base", "mid", "top"] if rng.random() < 0.6 else ["base", "m1", "m2", "top"]
    kinds = ["stream", "commit-int", "commit-active", "mirror", "backup"]
    k1, k2 = rng.choice(kinds), rng.choice(kinds)
    L = [f'name = "fz8-{seed}"', f'description = "random differential case {seed} ({k1} then {k2})"',
         'duration = "6s"', ""]
    prev = None
    for n in names:
        L += [f"[images.{n}]", f'size = "{size}"'] + ([f'backing = "{prev}"'] if prev else []) \
            + [f"data = {data(rng, size)}", ""]
        prev = n
    L += ["[images.dst]", f'size = "{size}"', "", "[images.tgt]", f'size = "{size}"', ""]
    L += ["[drives.vda]", 'image = "top"', 'werror = "report"', ""]
    j1, p1, w1 = _chain_job(rng, k1, names)
    j2, p2, w2 = _chain_job(rng, k2, names)
    if k1 == k2 and k1 in ("mirror", "backup"):
        # the second onto its own target
        L += [f"[images.{j1['target']}2]", f'size = "{size}"', ""]
        j2["target"] = j1["target"] + "2"
    manual_fin = rng.random() < 0.3
    for jid, j, pols in (("j", j1, p1), ("k", j2, p2)):
        L += [f"[jobs.{jid}]", 'device = "vda"'] + [f"{a} = {_toml(v)}" for a, v in j.items()]
        for p in pols:
            if rng.random() < 0.6:
                L.append(f'{p} = "{rng.choice(["report", "stop", "ignore"])}"')
        L.append(f"speed = {rng.choice([512 * KIB, MIB, 2 * MIB])}")
        if jid == "j":
            # after the thresholds (at 0): QEMU's job copies a small disk in
            # a few ms, before the next command arrives
            L.append('start = "100ms"')
            if manual_fin:
                L.append("auto-finalize = false")
        else:
            L.append('start = "manual"')
        L.append("")
    if rng.random() < 0.4:
        node = rng.choice([n for n in (w1["target"], j1.get("base")) if n and n in names] or names[:1])
        _fault(L, rng, node if rng.random() < 0.5 else names[0], "read" if node in names and rng.random() < 0.3 else "write",
               size, "EIO", rng.choice(["once", None]))
    S = _Script()
    # write thresholds on what the jobs write, and on the disk
    for _ in range(rng.choice([0, 1, 1, 2])):
        node = rng.choice(w1["write"] + w2["write"] + ["top", "top-file"])
        S.at(0, "block-set-write-threshold", {"node-name": node,
                                              "write-threshold": rng.randrange(1, 64) * 64 * KIB + rng.choice([0, 0, 512])})
    # when the second job starts
    when = rng.choice(["at", "at", "running", "ready", "error", "pending", "concluded", "null"])
    if when == "ready" and k1 not in ("mirror", "commit-active"):
        when = "at"
    if when == "pending" and not manual_fin:
        when = "null"
    if when == "at":
        # (not at 100 ms, the first one's start: which comes first is a race)
        S.at(rng.choice([300, 600, 1000]), "job-start", {"id": "k"})
    elif when == "ready":
        S.on("BLOCK_JOB_READY", rng.choice([0, 100]), "job-start", {"id": "k"}, match={"device": "j"})
    elif when == "error":
        S.on("BLOCK_JOB_ERROR", 100, "job-start", {"id": "k"}, match={"device": "j"})
        S.on("BLOCK_JOB_ERROR", 300, "block-job-resume", {"device": "j"}, match={"device": "j"})
    else:
        # (not at once on the first one's "running": that is its start
        # instant, and a first job failing at its first write has gone in
        # QEMU a few ms later, when the second's start arrives: fz8-2088)
        S.on("JOB_STATUS_CHANGE", rng.choice([0, 100]) if when != "running" else 100,
             "job-start", {"id": "k"}, match={"id": "j", "status": when})
    S.on("JOB_STATUS_CHANGE", 50, "query-block-jobs", match={"id": "k", "status": "running"})
    for jid, kind in (("j", k1), ("k", k2)):
        if kind in ("mirror", "commit-active"):
            # the first one never pivots: qemu-check's jobs name the drive's
            # image node, which a pivot would leave behind
            S.on("BLOCK_JOB_READY", rng.choice([300, 600]),
                 "block-job-cancel" if jid == "j" else rng.choice(["block-job-complete", "block-job-cancel"]),
                 {"device": jid}, match={"device": jid})
        if kind == "backup" and (j1 if jid == "j" else j2)["sync"] == "none":
            S.at(rng.choice([1500, 3000]), "block-job-cancel", {"device": jid})
    if manual_fin:
        S.on("JOB_STATUS_CHANGE", 600, "job-finalize", {"id": "j"}, match={"id": "j", "status": "pending"})
    if rng.random() < 0.4:
        S.on("BLOCK_JOB_ERROR", 500, "block-job-resume", {"device": "k"}, match={"device": "k"})
    for _ in range(rng.choice([0, 0, 1, 2])):
        off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        S.at(rng.choice([200, 700, 1500]), "guest-burst",
             {"drive": "vda", "rw": "write", "bs": "64KiB", "offset": off, "number-ios": rng.choice([1, 2])})
    S.at(5500, "query-named-block-nodes")
    L += S.tables
    return "\n".join(L) + "\n"


def grammar9(seed):
    """The thin-provisioning loop as management layers run it (vdsm,
    libvirt's block-threshold): a write threshold armed on what a job
    writes (its target or base, their protocol nodes) or on the guest's
    disk, BLOCK_WRITE_THRESHOLD answered by arming the next threshold some
    ms later ("extended"), ENOSPC (blkdebug errno 28) on the target under
    enospc / stop / report (ignore for a one-shot), a query while the job
    waits, and a resume once "extended" (the fault is one-shot, fails a
    sector twice, or is persistent and the loop gives up with a cancel);
    across stream, intermediate and active commit, mirror and backup, with
    guest writes crossing the disk's thresholds (and ENOSPC on the disk)."""
    rng = random.Random(seed)
    kind = rng.choice(["stream", "commit-int", "commit-active", "commit-active", "mirror",
                       "mirror", "backup", "backup"])
    size = 4 * MIB
    L = [f'name = "fz9-{seed}"', f'description = "random differential case {seed} ({kind})"',
         'duration = "6s"', ""]

    def img(name, backing=None, d=None):
        L.extend([f"[images.{name}]", f'size = "{size}"'] + ([f'backing = "{backing}"'] if backing else [])
                 + ([f"data = {d}"] if d else []) + [""])

    target = None
    if kind == "stream":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drive = "top"; job = {"type": "stream"}; pols = ["on-error"]
        # the copy-on-read writes reach the top's protocol node only
        writes = ["top-file"]
    elif kind == "commit-int":
        img("base", d=data(rng, size)); img("mid", "base", data(rng, size))
        img("top", "mid", data(rng, size))
        drive = "top"; job = {"type": "commit", "top": "mid", "base": "base"}; pols = ["on-error"]
        target = "base"; writes = ["base", "base-file"]
    elif kind == "commit-active":
        img("base", d=data(rng, size)); img("top", "base", data(rng, size))
        drive = "top"; job = {"type": "commit", "base": "base"}; pols = ["on-error"]
        # no threshold on the base: an active commit is a mirror whose
        # iteration issues the whole disk at once (a 16 MiB buffer), so
        # which copy's write comes first is a race
        target = "base"; writes = []
    elif kind == "mirror":
        # a source of one status: mirror_iteration splits a chunk where the
        # block status changes, and those copies are in flight together
        # (fz8-1002)
        img("src", d='"full"'); img("dst")
        drive = "src"
        # one copy at a time (buf-size 1 MiB): with several in flight, which
        # write reaches a threshold first is a race (grammar 8); not the
        # target's protocol node, whose crossing write depends on the order
        # parallel copies allocate clusters
        job = {"type": "mirror", "target": "dst", "sync": rng.choice(["full", "full", "none"]),
               "buf-size": "1MiB"}
        if rng.random() < 0.3:
            job["copy-mode"] = "write-blocking"
        pols = ["on-target-error"]
        target = "dst"; writes = ["dst"]
    else:
        # block-copy's tasks end where the block status changes, and one
        # smaller than the rate limit's slice lets the next one start with
        # it (fz9-27): a source of one status makes 1 MiB tasks, one at a time
        img("src", d='"full"'); img("tgt")
        drive = "src"
        job = {"type": "backup", "target": "tgt", "sync": rng.choice(["full", "full", "top", "none"])}
        pols = ["on-target-error"]
        target = "tgt"; writes = ["tgt"]
    L += ["[drives.vda]", f'image = "{drive}"', 'werror = "report"', ""]
    policy = rng.choice(["enospc", "enospc", "stop", "stop", "report", "ignore"])
    L += ["[jobs.j]", 'device = "vda"'] + [f"{k} = {_toml(v)}" for k, v in job.items()]
    for p in pols:
        L.append(f'{p} = "{policy}"')
    # always rate-limited: the loop's commands come between the job's writes
    L.append(f"speed = {rng.choice([512 * KIB, MIB, MIB, 2 * MIB])}")
    L.append('start = "100ms"')
    L.append("")
    # ENOSPC on the target: one-shot (extended in time), a sector failing
    # twice, or persistent (never extended); ignore only with a one-shot
    shape = None
    if target and rng.random() < 0.8:
        shape = rng.choice(["once", "once", "twice", "persistent"] if policy != "ignore" else ["once"])
        off = rng.randrange(1, size // (64 * KIB)) * 64 * KIB
        errno = "ENOSPC" if rng.random() < 0.85 else "EIO"
        _fault(L, rng, target, "write", size, errno, None if shape == "persistent" else "once", off)
        if shape == "twice":
            _fault(L, rng, target, "write", size, errno, "once", off)
    # ENOSPC on the disk, for the guest's writes (not under a stream: its
    # top's faults are skipped)
    if kind != "stream" and rng.random() < 0.25:
        _fault(L, rng, drive, "write", size, "ENOSPC", "once")
    S = _Script()
    dev = {"device": "j"}
    em = {"device": "j"}
    # thresholds: armed before the job starts, re-armed higher after each
    # crossing (the extend's latency), up to twice
    nodes = rng.sample(writes + [drive, drive + "-file"], rng.choice([1, 1, 2]))
    for node in nodes:
        step = rng.choice([256, 512, 1024]) * KIB
        thr = rng.randrange(1, 32) * 64 * KIB + rng.choice([0, 0, 512])
        S.at(0, "block-set-write-threshold", {"node-name": node, "write-threshold": thr})
        for n in range(1, rng.choice([1, 2, 3])):
            # (delays apart from the error reactions': a crossing and an
            # error a few ms apart come in either order)
            S.on("BLOCK_WRITE_THRESHOLD", rng.choice([20, 170]), "block-set-write-threshold",
                 {"node-name": node, "write-threshold": thr + n * step},
                 match={"node-name": node}, nth=1 if n == 1 else None,
                 after=None)
            if n == 2:
                # the second re-arm answers the second crossing
                S.tables[-1] = S.tables[-1].replace('on = "BLOCK_WRITE_THRESHOLD"',
                                                    'on = "BLOCK_WRITE_THRESHOLD"\nnth = 2', 1)
        if rng.random() < 0.5:
            S.on("BLOCK_WRITE_THRESHOLD", 120, "query-named-block-nodes", match={"node-name": node})
    # the ENOSPC pause: query, "extend", resume; a persistent one gives up
    if shape:
        ext = rng.choice([300, 600])
        S.on("BLOCK_JOB_ERROR", 60, "query-block-jobs", match=em, nth=1)
        if shape == "persistent":
            S.on("BLOCK_JOB_ERROR", ext, "block-job-resume", dev, match=em, nth=1)
            cancel = rng.choice(["block-job-cancel", "block-job-cancel-force", "job-cancel"])
            S.on("BLOCK_JOB_ERROR", ext, cancel.replace("-force", ""),
                 {"id": "j"} if cancel == "job-cancel" else
                 {"device": "j", "force": True} if cancel.endswith("force") else dev,
                 match=em, nth=2)
        else:
            S.on("BLOCK_JOB_ERROR", ext, rng.choice(["block-job-resume", "job-resume"]), None,
                 match=em, repeat=True)
            S.tables[-1] += ("\narguments = {device = \"j\"}" if "block-job-resume" in S.tables[-1]
                             else "\narguments = {id = \"j\"}")
        S.on("JOB_STATUS_CHANGE", 50, "query-block-jobs", match={"id": "j", "status": "running"},
             after="BLOCK_JOB_ERROR", after_match=em)
    if kind in ("mirror", "commit-active"):
        # no pivot: qemu-check's jobs name the drive's image node
        # (not due with a guest burst: a sync=none mirror is READY at its
        # start, 100 ms, and the burst at 300 ms came first on QEMU, fz9-211)
        S.on("BLOCK_JOB_READY", rng.choice([250, 450]), "block-job-cancel", dev, match=em)
    if kind == "backup" and job["sync"] == "none":
        S.at(rng.choice([1500, 3000]), "block-job-cancel", dev)
    # (never two bursts at one instant: qemu-check carries them out one
    # after the other, blocksim at once, fz9-133)
    for t in rng.sample([300, 700, 1300, 2100], rng.choice([0, 1, 1, 2])):
        off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
        S.at(t, "guest-burst",
             {"drive": "vda", "rw": "write", "bs": "64KiB", "offset": off,
              "number-ios": rng.choice([1, 2, 4])})
    S.at(5500, "query-named-block-nodes")
    L += S.tables
    return "\n".join(L) + "\n"


def grammar10(seed):
    """What the other grammars leave out of the job family: query-jobs
    beside query-block-jobs at each status a job passes through, job-*
    verbs against block-job-* ones on the same job (a user pause, an
    error pause, READY, pending, concluded), block-dirty-bitmap-merge of
    checkpoints into a temporary bitmap an incremental backup then uses
    (merges into it and from it while the backup holds it, after it), and
    an active mirror (write-blocking) whose target fails the writes a
    guest burst mirrors, before and after READY, under each policy.
    (The guest's own rerror/werror and stop/cont need a VM, which
    qemu-storage-daemon has not: qemu-check skips them.)"""
    rng = random.Random(seed)
    kind = rng.choice(["merge", "merge", "verbs", "verbs", "active", "active"])
    size = 4 * MIB
    L = [f'name = "fz10-{seed}"', f'description = "random differential case {seed} ({kind})"',
         f'duration = "{rng.choice([5, 6])}s"', ""]
    S = _Script()
    dev, ident, em = {"device": "j"}, {"id": "j"}, {"device": "j"}

    def args_of(cmd):
        return dev if cmd.startswith("block-job-") and cmd not in (
            "block-job-finalize", "block-job-dismiss") else ident

    def verb(cmd, on=None, delay=0, match=None, at=None, **kw):
        if at is not None:
            S.at(at, cmd, args_of(cmd))
        else:
            S.on(on, delay, cmd, args_of(cmd), match=match, **kw)

    if kind == "merge":
        ex1, ex2 = extents(rng, size, rng.randint(1, 2)), extents(rng, size, rng.randint(1, 2))
        d1 = ", ".join(f'{{offset = "{o}", length = "{n}"}}' for o, n in ex1)
        d2 = ", ".join(f'{{offset = "{o}", length = "{n}"}}' for o, n in ex2)
        g2 = rng.choice([None, 131072, 32768])
        L += ["[images.src]", f'size = "{size}"', f"data = {data(rng, size)}",
              f'bitmaps = [{{name = "c1", dirty = [{d1}]}}, {{name = "c2", dirty = [{d2}]'
              + (f', granularity = "{g2}"' if g2 else "")
              + f", recording = {_toml(rng.random() < 0.5)}}}]", ""]
        L += ["[images.tgt]", f'size = "{size}"', "", "[images.tgt2]", f'size = "{size}"', ""]
        L += ["[drives.vda]", 'image = "src"', 'werror = "report"', ""]
        sync = rng.choice(["bitmap", "bitmap", "incremental"])
        L += ["[jobs.j]", 'type = "backup"', 'device = "vda"', 'target = "tgt"',
              f'sync = "{sync}"', 'bitmap = "tmp"']
        if sync == "bitmap":
            L.append(f'bitmap-mode = "{rng.choice(["on-success", "always", "never"])}"')
        L.append(f'on-target-error = "{rng.choice(["report", "stop", "ignore"])}"')
        L += [f"speed = {rng.choice([256 * KIB, 512 * KIB])}", 'start = "manual"']
        manual_fin = rng.random() < 0.3
        if manual_fin:
            L.append("auto-finalize = false")
        L.append("")
        second = rng.random() < 0.5
        if second:
            # the next incremental backup, of a checkpoint the merge left alone
            L += ["[jobs.k]", 'type = "backup"', 'device = "vda"', 'target = "tgt2"',
                  'sync = "incremental"', f'bitmap = "{rng.choice(["c1", "c2", "tmp"])}"',
                  f"speed = {MIB}", 'start = "manual"', ""]
        if rng.random() < 0.4:
            _fault(L, rng, "tgt", "write", size, None, rng.choice(["once", None]),
                   rng.choice([o for o, _n in ex1 + ex2]))
        gt = rng.choice([None, None, 65536, 131072])
        add = {"node": "src", "name": "tmp", "disabled": rng.random() < 0.7}
        if gt:
            add["granularity"] = gt
        S.at(100, "block-dirty-bitmap-add", add)
        srcs = rng.choice([['"c1"', '"c2"'], ['"c1"'], ['"c2"', '"c1"'], ['"c1"', '"nosuch"']])
        S.at(200, "block-dirty-bitmap-merge", None)
        S.tables[-1] += f'\narguments = {{node = "src", target = "tmp", bitmaps = [{", ".join(srcs)}]}}'
        # (never an empty tmp: a backup with nothing to copy is done in a
        # few ms, before any query on its start: fz10-2058)
        if '"nosuch"' in srcs or rng.random() < 0.3:
            S.at(250, "block-dirty-bitmap-merge", None)
            S.tables[-1] += '\narguments = {node = "src", target = "tmp", bitmaps = ["c2"]}'
        if rng.random() < 0.4:
            off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
            S.at(300, "guest-burst", {"drive": "vda", "rw": "write", "bs": "64KiB", "offset": off,
                                      "number-ios": 1})
        S.at(400, "job-start", {"id": "j"})
        S.on("JOB_STATUS_CHANGE", 50, "query-jobs", match={"id": "j", "status": "running"})
        # merges while the backup holds tmp: into it, and from it
        for _ in range(rng.choice([0, 1, 2])):
            into = rng.random() < 0.5
            a = ('{node = "src", target = "tmp", bitmaps = ["c1"]}' if into
                 else '{node = "src", target = "c1", bitmaps = ["tmp"]}')
            S.on("JOB_STATUS_CHANGE", rng.choice([100, 200]), "block-dirty-bitmap-merge", None,
                 match={"id": "j", "status": "running"})
            S.tables[-1] += f"\narguments = {a}"
        for _ in range(rng.choice([0, 1, 2])):
            off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
            S.at(rng.choice([700, 1500, 2500]), "guest-burst",
                 {"drive": "vda", "rw": "write", "bs": rng.choice(["4KiB", "64KiB"]), "offset": off,
                  "number-ios": rng.choice([1, 2])})
        S.on("BLOCK_JOB_ERROR", 100, "query-jobs", match=em)
        S.on("BLOCK_JOB_ERROR", 300, rng.choice(["block-job-resume", "job-resume"]), None, match=em,
             repeat=True)
        S.tables[-1] += "\narguments = " + ('{device = "j"}' if "block-job" in S.tables[-1] else '{id = "j"}')
        if manual_fin:
            S.on("JOB_STATUS_CHANGE", 100, "query-jobs", match={"id": "j", "status": "pending"})
            S.on("JOB_STATUS_CHANGE", 200, rng.choice(["block-job-finalize", "job-finalize"]), ident,
                 match={"id": "j", "status": "pending"})
        # after the backup: merge tmp back into a checkpoint, remove it
        S.on("JOB_STATUS_CHANGE", 100, "block-dirty-bitmap-merge", None, match={"id": "j", "status": "null"})
        S.tables[-1] += '\narguments = {node = "src", target = "c1", bitmaps = ["tmp"]}'
        if second:
            S.on("JOB_STATUS_CHANGE", 200, "job-start", {"id": "k"}, match={"id": "j", "status": "null"})
            S.on("JOB_STATUS_CHANGE", 100, "query-jobs", match={"id": "k", "status": "concluded"})
        elif rng.random() < 0.5:
            S.on("JOB_STATUS_CHANGE", 300, "block-dirty-bitmap-remove", {"node": "src", "name": "tmp"},
                 match={"id": "j", "status": "null"})
    else:
        if kind == "active":
            jk = "mirror-active"
        else:
            jk = rng.choice(["mirror", "mirror-active", "commit-active", "commit-int", "backup", "stream"])
        if jk.startswith("mirror") or jk == "backup":
            L += ["[images.src]", f'size = "{size}"', f"data = {data(rng, size)}", "",
                  "[images.dst]", f'size = "{size}"', ""]
            drive = "src"
            if jk == "backup":
                job = {"type": "backup", "target": "dst", "sync": rng.choice(["full", "full", "none"])}
            else:
                job = {"type": "mirror", "target": "dst", "sync": rng.choice(["full", "full", "none"])}
                if jk == "mirror-active":
                    job["copy-mode"] = "write-blocking"
            pols = ["on-source-error", "on-target-error"]
            fnode = "dst"
        elif jk == "commit-int":
            L += ["[images.base]", f'size = "{size}"', f"data = {data(rng, size)}", "",
                  "[images.mid]", f'size = "{size}"', 'backing = "base"', f"data = {data(rng, size)}", "",
                  "[images.top]", f'size = "{size}"', 'backing = "mid"', f"data = {data(rng, size)}", ""]
            drive = "top"; job = {"type": "commit", "top": "mid", "base": "base"}
            pols = ["on-error"]; fnode = "base"
        else:
            L += ["[images.base]", f'size = "{size}"', f"data = {data(rng, size)}", "",
                  "[images.top]", f'size = "{size}"', 'backing = "base"', f"data = {data(rng, size)}", ""]
            drive = "top"
            if jk == "stream":
                job = {"type": "stream"}; fnode = "base"
            else:
                job = {"type": "commit", "base": "base"}; fnode = "base"
            pols = ["on-error"]
        ready = jk.startswith("mirror") or jk == "commit-active"
        L += ["[drives.vda]", f'image = "{drive}"', f'werror = "{rng.choice(["report", "ignore"])}"', ""]
        L += ["[jobs.j]", 'device = "vda"'] + [f"{k} = {_toml(v)}" for k, v in job.items()]
        policy = rng.choice(["report", "stop", "stop", "ignore", "enospc"])
        for p in pols:
            if p != "on-source-error" or rng.random() < 0.3:
                L.append(f'{p} = "{policy}"')
        L.append(f"speed = {rng.choice([512 * KIB, MIB, 2 * MIB])}")
        L.append('start = "100ms"')
        # (not with guest writes on a mirror's disk: a completed mirror
        # holds its source drained until job-finalize, mirror_run's
        # bdrv_drained_begin, which queues a guest's requests but not those
        # of the NBD client qemu-check connects for each burst: fz10-2001)
        manual_fin, manual_dis = _manual_end(L, rng, None if kind == "active" else 0.35, 0.35)
        L.append("")
        offs = [rng.randrange(0, size // (64 * KIB)) * 64 * KIB for _ in range(rng.choice([1, 2, 3]))]
        nfaults = 0
        if kind == "active":
            # the target fails where the guest writes (the active write path)
            # or where the background copy goes
            for off in rng.sample(offs, rng.choice([1, len(offs)])):
                nfaults += 1
                _fault(L, rng, "dst", rng.choice(["write", "write", "write-zeroes"]), size, None,
                       rng.choice(["once", "once", None]), off + rng.choice([0, 4096]))
        elif rng.random() < 0.6:
            op = "read" if jk == "stream" else rng.choice(["write", "write", "flush"])
            _fault(L, rng, fnode, op, size, None, rng.choice(["once", "once", None]))
            nfaults += 1
        # guest bursts (not on a stream's or intermediate commit's disk)
        if jk not in ("stream", "commit-int") and not (manual_fin and ready):
            # (at odd ms: never at a verb's or a reaction's instant, which
            # QEMU sees in either order: fz10-2092)
            times = rng.sample([330, 770, 1330, 2170, 3130], rng.choice([1, 2, 3]) if kind == "active" else rng.choice([0, 1]))
            for t, off in zip(sorted(times), offs * 3):
                S.at(t, "guest-burst", {"drive": "vda", "rw": "write", "bs": rng.choice(["4KiB", "64KiB"]),
                                        "offset": off, "number-ios": rng.choice([1, 2])})
        # verbs, each followed by query-jobs (the statuses they leave)
        S.on("JOB_STATUS_CHANGE", 50, "query-jobs", match={"id": "j", "status": "running"}, nth=1)
        r = rng.random()
        if r < 0.3:
            t0 = rng.choice([300, 600])
            verb(rng.choice(["job-pause", "block-job-pause"]), at=t0)
            S.at(t0 + 100, "query-jobs")
            if rng.random() < 0.5:
                verb(rng.choice(["job-pause", "block-job-pause"]), at=t0 + 150)
            verb(rng.choice(["job-complete", "job-finalize", "job-dismiss", "block-job-set-speed"]), at=t0 + 200)
            if "set-speed" in S.tables[-1]:
                S.tables[-1] = S.tables[-1].replace('{device = "j"}', f'{{device = "j", speed = {4 * MIB}}}')
            verb(rng.choice(["job-resume", "block-job-resume"]), at=t0 + 300)
            S.at(t0 + 350, "query-jobs")
        elif r < 0.5:
            # (not at READY's reactions: a sync=none mirror is READY at
            # 100 ms, and two verbs due at one instant reach QEMU a few ms
            # apart, the first one's transition between them: fz10-2001)
            verb(rng.choice(["job-complete", "block-job-complete", "job-finalize", "job-dismiss"]),
                 at=rng.choice([250, 650]))
        S.on("BLOCK_JOB_ERROR", 100, "query-jobs", match=em)
        c = rng.random()
        if c < 0.5:
            # (repeated only with one fault: two errors of one pass, at one
            # instant, would send two resumes at one instant, which reach
            # QEMU apart, the job failing again between them: fz10-2157)
            verb(rng.choice(["job-resume", "block-job-resume"]), on="BLOCK_JOB_ERROR", delay=250,
                 match=em, repeat=nfaults == 1 and rng.random() < 0.5)
            if rng.random() < 0.4:
                verb(rng.choice(["job-pause", "block-job-pause"]), on="BLOCK_JOB_ERROR", delay=150, match=em)
        elif c < 0.7:
            verb(rng.choice(["job-cancel", "block-job-cancel"]), on="BLOCK_JOB_ERROR", delay=200, match=em)
            S.on("BLOCK_JOB_ERROR", 300, "query-jobs", match=em)
        elif c < 0.85:
            verb(rng.choice(["job-complete", "block-job-complete"]), on="BLOCK_JOB_ERROR", delay=150, match=em)
            verb("job-resume", on="BLOCK_JOB_ERROR", delay=300, match=em, repeat=nfaults == 1)
        if ready:
            rr = rng.random()
            cmd = ("job-complete" if rr < 0.35 else "block-job-complete" if rr < 0.6
                   else "block-job-cancel" if rr < 0.8 else "job-cancel")
            verb(cmd, on="BLOCK_JOB_READY", delay=rng.choice([200, 400]), match=em)
            S.on("BLOCK_JOB_READY", 100, "query-jobs", match=em)
            if rng.random() < 0.3:
                verb(rng.choice(["job-pause", "block-job-pause"]), on="BLOCK_JOB_READY", delay=50, match=em)
                verb(rng.choice(["job-resume", "block-job-resume"]), on="BLOCK_JOB_READY", delay=150, match=em)
        elif job["type"] == "backup" and job["sync"] == "none":
            verb(rng.choice(["job-cancel", "block-job-cancel"]), at=rng.choice([1500, 3000]))
        if manual_fin:
            st = {"id": "j", "status": "pending"}
            S.on("JOB_STATUS_CHANGE", 100, "query-jobs", match=st)
            verb(rng.choice(["job-dismiss", "job-complete", "block-job-pause", "job-resume"]),
                 on="JOB_STATUS_CHANGE", delay=150, match=st)
            verb(rng.choice(["job-finalize", "block-job-finalize", "job-cancel"]),
                 on="JOB_STATUS_CHANGE", delay=250, match=st)
            if "cancel" in S.tables[-1]:
                verb("job-finalize", on="JOB_STATUS_CHANGE", delay=350, match=st)
        if manual_dis:
            st = {"id": "j", "status": "concluded"}
            S.on("JOB_STATUS_CHANGE", 100, "query-jobs", match=st)
            verb(rng.choice(["job-finalize", "job-cancel", "block-job-resume", "job-pause"]),
                 on="JOB_STATUS_CHANGE", delay=150, match=st)
            verb(rng.choice(["job-dismiss", "block-job-dismiss"]), on="JOB_STATUS_CHANGE", delay=250, match=st)
            S.on("JOB_STATUS_CHANGE", 300, "query-jobs", match=st)
    L += S.tables
    return "\n".join(L) + "\n"


def grammar11(seed):
    """Transactions, as libvirt starts backups with their checkpoints: one to
    three ``transaction`` commands, each of one to four actions (a bitmap
    added, a duplicate added, removed, a missing one removed, cleared,
    enabled, disabled, merged, ``blockdev-backup`` of a declared job,
    ``abort`` at times, ``completion-mode = "grouped"`` at times), so that
    some are refused and rolled back; bitmap commands and job starts
    afterwards whose answers show what the transactions left (a bitmap
    there or not, busy or not); guest writes between them; a backup that may
    fail on its target; bitmap backups with ``bitmap-mode = "never"``, whose
    bitmap's count at the end qemu-check compares."""
    rng = random.Random(seed)
    size = 4 * MIB
    L = [f'name = "fz11-{seed}"', f'description = "random differential case {seed} (transactions)"',
         'duration = "5s"', ""]
    ex = extents(rng, size, rng.randint(1, 3))
    dirty = ", ".join(f'{{offset = "{o}", length = "{n}"}}' for o, n in ex)
    bms = [f'{{name = "c0", dirty = [{dirty}], recording = {_toml(rng.random() < 0.7)}}}']
    names = ["c0"]
    if rng.random() < 0.5:
        ex9 = extents(rng, size, 1)
        bms.append("{name = \"c9\", dirty = [" + ", ".join(
            f'{{offset = "{o}", length = "{n}"}}' for o, n in ex9) + "]}")
        names.append("c9")
    L += ["[images.src]", f'size = "{size}"', 'format = "qcow2"', f"data = {data(rng, size)}",
          f"bitmaps = [{', '.join(bms)}]", ""]
    for t in ("t0", "t1"):
        L += [f"[images.{t}]", f'size = "{size}"', 'format = "qcow2"', ""]
    L += ["[drives.vda]", 'image = "src"', ""]
    # b0: a full backup (the one with the checkpoint), b1: an incremental
    L += ["[jobs.b0]", 'type = "backup"', 'device = "vda"', 'target = "t0"', 'sync = "full"',
          f"speed = {rng.choice([MIB, 2 * MIB])}", 'start = "manual"',
          f'on-target-error = "{rng.choice(["report", "report", "ignore"])}"', ""]
    inc = rng.choice(["c0", "c1", "c9" if "c9" in names else "c0"])
    L += ["[jobs.b1]", 'type = "backup"', 'device = "vda"', 'target = "t1"', 'sync = "bitmap"',
          f'bitmap = "{inc}"', 'bitmap-mode = "never"', f"speed = {2 * MIB}", 'start = "manual"', ""]
    if rng.random() < 0.3:
        _fault(L, rng, "t0", "write", size, "EIO", "once")
    S = _Script()
    slots = iter(sorted(rng.sample(range(100, 3600, 100), 9)))
    started = set()
    added = ["c1", "c2"]
    for _ in range(rng.randint(1, 3)):
        actions = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["add", "add", "add-dup", "remove", "remove-missing", "clear",
                               "enable", "disable", "disable", "merge", "backup", "backup",
                               "abort"])
            if kind == "add":
                data_ = {"node": "src", "name": rng.choice(added)}
            elif kind == "add-dup":
                data_ = {"node": "src", "name": rng.choice(names)}
            elif kind == "remove-missing":
                data_ = {"node": "src", "name": "nosuch"}
            elif kind == "merge":
                data_ = {"node": "src", "target": rng.choice(names + added),
                         "bitmaps": rng.sample(names + added, rng.randint(1, 2))}
            elif kind == "backup":
                job = rng.choice(["b0", "b1"])
                if job in started:
                    continue
                data_ = {"job-id": job}
            elif kind == "abort":
                data_ = {}
            elif kind == "enable":
                # (only c0, never removed here: an enable that does not find
                # its bitmap kills QEMU 7.2, docs/jobs.md)
                data_ = {"node": "src", "name": "c0"}
            elif kind == "remove":
                data_ = {"node": "src", "name": rng.choice(names[1:] + added)}
            else:
                data_ = {"node": "src", "name": rng.choice(names + added)}
            qtype = {"add": "block-dirty-bitmap-add", "add-dup": "block-dirty-bitmap-add",
                     "remove-missing": "block-dirty-bitmap-remove", "backup": "blockdev-backup",
                     "abort": "abort"}.get(kind, f"block-dirty-bitmap-{kind}")
            actions.append("{type = " + _toml(qtype) + ", data = {"
                           + ", ".join(f"{k} = {_toml(v)}" for k, v in data_.items()) + "}}")
            if kind == "backup":
                started.add(data_["job-id"])
        table = ["[[actions]]", f'at = "{next(slots)}ms"', 'command = "transaction"',
                 "[actions.arguments]", "actions = [" + ", ".join(actions) + "]"]
        if (rng.random() < 0.1 and not any("enable" in a for a in actions)
                and not all("blockdev-backup" in a for a in actions)):
            # (an enable refused by grouped before its lookup kills QEMU 7.2;
            # grouped backups alone, jobs that end together, are not modelled)
            table.append('properties = {completion-mode = "grouped"}')
        S.tables.append("\n".join(table))
        # what it left: a command whose answer shows it
        probe = rng.choice(["add", "remove", "query"])
        if probe == "add":
            S.at(next(slots), "block-dirty-bitmap-add", {"node": "src", "name": rng.choice(added)})
        elif probe == "remove":
            S.at(next(slots), "block-dirty-bitmap-remove",
                 {"node": "src", "name": rng.choice(names[1:] + added)})
        else:
            S.at(next(slots), "query-block-jobs")
        if rng.random() < 0.5:
            off = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
            S.at(next(slots), "guest-burst", {"drive": "vda", "rw": "write", "bs": "4KiB",
                                              "offset": off})
    # the incremental at the end, unless a transaction started it
    if "b1" not in started:
        S.at(3800, "job-start", {"id": "b1"})
    L += S.tables
    return "\n".join(L) + "\n"


GRAMMARS = {1: grammar1, 2: grammar2, 3: grammar3, 4: grammar4, 5: grammar5, 6: grammar6,
            7: grammar7, 8: grammar8, 9: grammar9, 10: grammar10, 11: grammar11}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the scenarios into")
    parser.add_argument("--grammar", type=int, choices=sorted(GRAMMARS), default=1)
    parser.add_argument("--seeds", default="0:100", help="A:B, the seeds drawn (default 0:100)")
    args = parser.parse_args(argv)
    a, b = (int(x) for x in args.seeds.split(":"))
    os.makedirs(args.out, exist_ok=True)
    for seed in range(a, b):
        text = GRAMMARS[args.grammar](seed)
        name = text.split('"', 2)[1]
        with open(os.path.join(args.out, f"{name}.toml"), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"{b - a} scenarios in {args.out}; run: blocksim qemu-check {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
