"""Random differential cases against real QEMU: scenarios drawn at random
from three grammars, for ``blocksim qemu-check``.

    python tests/qemu/differential.py OUT [--grammar 1|2|3] [--seeds 0:200]
    blocksim qemu-check OUT/ --json > report.json

1. one job (stream, mirror, active mirror, commit, backup) on small images
   with random data, one or two blkdebug faults (read, write, flush, EIO or
   ENOSPC, once, twice or persistent), a random policy and a management
   reaction (query, resume, cancel, complete, pause/resume);
2. manual finalize and dismiss, bitmap backups, set-speed, speed-paced jobs,
   two jobs on two drives, write-zeroes and flush faults, jobs' verbs;
3. guest writes (guest-burst) against active mirrors, backups'
   copy-before-write and active commits, write thresholds, at times well
   apart.

Not collected by pytest: it writes scenarios, it checks nothing itself.  A
disagreement is a lead, not a verdict: real QEMU runs in real time, so cases
whose commands race the jobs (a query right after a job's creation, a
command a few ms from an event) can differ by timing alone.  Session 12's
campaign (about 900 cases) found stream's runs, blkdebug's write-zeroes
iotype, the flush's write generation, the job list's order and a pending
mirror's pause; see docs/qemu-check.md.
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


GRAMMARS = {1: grammar1, 2: grammar2, 3: grammar3}


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
