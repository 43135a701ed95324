"""An example management daemon on qemu.qmp, for `blocksim serve`.

What a management layer (libvirt, vdsm) does, in forty lines of policy:

- it mirrors the VM's disk to a new volume (``blockdev-mirror`` with
  ``on-target-error = "stop"``);
- when the mirror stops on a target error (BLOCK_JOB_ERROR, action "stop")
  it resumes the job (``block-job-resume``): the storage had a hiccup;
- with ``--threshold``, it arms a write threshold on the thin disk
  (``block-set-write-threshold``) and extends the disk when
  BLOCK_WRITE_THRESHOLD comes, re-arming it ``--extend-by`` higher, as vdsm
  does, so the guest never fills it;
- when the VM pauses because its thin disk is full (BLOCK_IO_ERROR with
  ``nospace``, then STOP), it extends the disk (here the simulator's
  ``x-blocksim-thin-extend``; in production an LVM extend) after
  ``--extend-delay`` seconds and sends ``cont``;
- when the mirror is READY it completes it (``block-job-complete``, the pivot),
  and when it is COMPLETED it quits.

In virtual time (``blocksim serve`` without ``--speed``) nothing happens
unless the daemon lets time pass: it asks ``x-blocksim-advance`` to run
until one of the events it watches, or until its next own deadline.  The same
loop works in real time (``--speed X``), where the advance is not needed.

Usage::

    blocksim serve examples/serve/thin-disk-and-mirror.toml --socket /tmp/qmp.sock &
    python examples/serve/daemon.py /tmp/qmp.sock --device vda --target copy \\
        --extend-image disk --extend-by 16777216 --extend-delay 2
"""

from __future__ import annotations

import argparse
import asyncio

from qemu.qmp import EventListener, QMPClient

WATCHED = ["BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "STOP",
           "BLOCK_IO_ERROR", "BLOCK_WRITE_THRESHOLD"]


def seconds(timestamp: dict) -> float:
    return timestamp["seconds"] + timestamp["microseconds"] / 1e6


async def manage(socket: str, device: str, target: str, extend_image: str | None,
                 extend_by: int, extend_delay: float, job_id: str = "mirror0",
                 virtual: bool = True, threshold: int | None = None) -> dict:
    client = QMPClient("daemon")
    await client.connect(socket)
    listener = EventListener(WATCHED)
    done: dict = {}
    due: list[tuple[float, str]] = []       # (simulated time, what) the daemon will do
    now = 0.0
    with client.listen(listener):
        if threshold is not None and extend_image:
            await client.execute("block-set-write-threshold",
                                 {"node-name": extend_image, "write-threshold": threshold})
        await client.execute("blockdev-mirror", {
            "job-id": job_id, "device": device, "target": target, "sync": "full",
            "speed": 16 << 20, "on-target-error": "stop", "on-source-error": "stop"})
        while "completed" not in done:
            if virtual:
                step = {"until-event": WATCHED}
                if due:
                    step["seconds"] = max(0.0, min(t for t, _ in due) - now)
                answer = await client.execute("x-blocksim-advance", step)
                now = seconds(answer["time"])
                if answer["end"] and not listener.history:
                    break
            else:
                await asyncio.sleep(0.01)
            for event in listener.clear():
                name, data = event["event"], event.get("data", {})
                now = max(now, seconds(event["timestamp"]))
                if name == "BLOCK_JOB_ERROR" and data.get("action") == "stop":
                    await client.execute("block-job-resume", {"device": data["device"]})
                elif name == "BLOCK_IO_ERROR" and data.get("nospace") and extend_image:
                    if not any(what == "extend" for _, what in due):
                        due.append((now + extend_delay, "extend"))
                elif name == "BLOCK_WRITE_THRESHOLD" and data.get("node-name") == extend_image:
                    threshold = data["write-threshold"] + extend_by
                    due.append((now + extend_delay, "extend"))
                elif name == "BLOCK_JOB_READY":
                    await client.execute("block-job-complete", {"device": data["device"]})
                elif name == "BLOCK_JOB_COMPLETED":
                    done["completed"] = data
            for when, what in [d for d in due if d[0] <= now + 1e-9]:
                due.remove((when, what))
                if what == "extend":
                    await client.execute("x-blocksim-thin-extend",
                                         {"image": extend_image, "by": extend_by})
                    if threshold is not None:
                        await client.execute("block-set-write-threshold", {
                            "node-name": extend_image, "write-threshold": threshold})
                    if (await client.execute("query-status"))["status"] != "running":
                        await client.execute("cont")
        done["status"] = await client.execute("query-status")
        await client.execute("quit")
    await client.disconnect()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket")
    parser.add_argument("--device", default="vda")
    parser.add_argument("--target", default="copy")
    parser.add_argument("--extend-image", default=None)
    parser.add_argument("--extend-by", type=int, default=16 << 20)
    parser.add_argument("--extend-delay", type=float, default=2.0)
    parser.add_argument("--threshold", type=int, default=None,
                        help="arm a write threshold at this offset of --extend-image")
    parser.add_argument("--real-time", action="store_true",
                        help="the server runs with --speed: do not advance its clock")
    args = parser.parse_args()
    done = asyncio.run(manage(args.socket, args.device, args.target, args.extend_image,
                              args.extend_by, args.extend_delay, virtual=not args.real_time,
                              threshold=args.threshold))
    print(done)


if __name__ == "__main__":
    main()
