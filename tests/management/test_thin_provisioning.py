"""The thin-provisioning controller (blocksim.management.thin_provisioning)
and the storage it drives (blocksim.model.thin): threshold placement, event
and poll modes, the monitor cycle, ENOSPC then cont, concurrency, a full
pool, a mirror's thin target."""

from blocksim import load_scenario
from blocksim.simulation import Simulation

MiB, GiB = 1 << 20, 1 << 30
S = 1_000_000_000


def scenario(**over):
    sc = {"duration": "20s",
          "images": {"disk": {"size": "4GiB", "lv-size": "1GiB", "pool": "vg"}},
          "pools": {"vg": {"extend-latency": "1s", "refresh": "100ms"}},
          "drives": {"vda": {"image": "disk", "werror": "enospc"}},
          "workloads": {"w": {"drive": "vda", "rw": "write", "bs": "1MiB", "rate-iops": 100}},
          "thin-provisioning": {"chunk": "512MiB"}}
    sc.update(over)
    return load_scenario(sc)


def run(sc):
    result = Simulation(sc).run()
    return result


def timeline(result, names=None):
    """(seconds, what) of events and commands, in time order."""
    out = []
    for e in result.events:
        if names is None or e["event"] in names:
            t = e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
            out.append((round(t, 3), e["event"], e["data"]))
    for c in result.commands:
        t = c["timestamp"]["seconds"] + c["timestamp"]["microseconds"] / 1e6
        out.append((round(t, 3), ">" + c["execute"], c["arguments"]))
    return sorted(out, key=lambda x: x[0])


def commands(result, name):
    return [c for c in result.commands if c["execute"] == name]


def test_threshold_placed_half_a_chunk_below_the_volume_end_on_the_protocol_node():
    r = run(scenario(duration="1s"))
    first = commands(r, "block-set-write-threshold")[0]
    assert first["arguments"] == {"node-name": "disk-file", "write-threshold": GiB - 256 * MiB}
    assert first["source"] == "thin-provisioning" and first["timestamp"]["seconds"] == 0


def test_event_marks_the_volume_and_the_next_cycle_extends_it_then_rearms():
    r = run(scenario(duration="12s", workloads={"w": {"drive": "vda", "rw": "write", "bs": "1MiB",
                                                      "rate-iops": 100}},
                     pools={"vg": {"extend-latency": "500ms", "refresh": "100ms"}}))
    ev = [e for e in r.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    assert ev[0]["data"]["node-name"] == "disk-file"
    t_event = ev[0]["timestamp"]["seconds"] + ev[0]["timestamp"]["microseconds"] / 1e6
    ext = commands(r, "lv-extend")[0]
    assert ext["arguments"] == {"image": "disk", "size": GiB + 512 * MiB}
    # vdsm: the event only marks the drive; the periodic monitor (2 s) extends it
    assert ext["timestamp"]["seconds"] % 2 == 0 and ext["timestamp"]["microseconds"] == 0
    assert t_event < ext["timestamp"]["seconds"] <= t_event + 2
    done = [e for e in r.events if e["event"] == "VOLUME_EXTENDED"][0]
    assert done["data"] == {"image": "disk", "size": GiB + 512 * MiB}
    # 500 ms on the storage + 100 ms refresh after the request
    assert done["timestamp"]["seconds"] == ext["timestamp"]["seconds"]
    assert done["timestamp"]["microseconds"] == 600_000
    rearm = commands(r, "block-set-write-threshold")[1]
    assert rearm["arguments"]["write-threshold"] == GiB + 256 * MiB
    assert rearm["timestamp"] == done["timestamp"]
    # 100 MiB/s for 12 s, extended in time: no pause
    assert not [e for e in r.events if e["event"] == "STOP"]


def test_guest_outruns_a_slow_extend_pauses_then_cont_after_the_extend():
    r = run(scenario(duration="20s", pools={"vg": {"extend-latency": "6s", "refresh": "100ms"}}))
    seq = [x[1] for x in timeline(r, {"BLOCK_WRITE_THRESHOLD", "BLOCK_IO_ERROR", "STOP",
                                      "VOLUME_EXTENDED", "RESUME"})
           if x[1] in ("BLOCK_WRITE_THRESHOLD", "BLOCK_IO_ERROR", "STOP", "VOLUME_EXTENDED",
                       "RESUME", ">lv-extend")]
    # 768 MiB at 100 MiB/s: the threshold at 7.7 s, the extend asked at the
    # 8 s cycle, the volume full at 10.3 s, the extend done at 14.1 s, cont
    assert seq[:seq.index("RESUME") + 1] == [
        "BLOCK_WRITE_THRESHOLD", ">lv-extend", "BLOCK_IO_ERROR", "STOP", "VOLUME_EXTENDED",
        "RESUME"]
    io = [e for e in r.events if e["event"] == "BLOCK_IO_ERROR"][0]["data"]
    assert io["nospace"] and io["action"] == "stop"
    cont = commands(r, "cont")[0]
    assert cont["source"] == "thin-provisioning"
    assert cont["timestamp"] == {"seconds": 14, "microseconds": 100_000}
    assert r.summary["drives"]["vda"]["writes_lost"] == 0


def test_without_resume_the_vm_stays_paused():
    r = run(scenario(duration="14s", pools={"vg": {"extend-latency": "6s"}},
                     **{"thin-provisioning": {"chunk": "512MiB", "resume": False}}))
    assert not commands(r, "cont")
    assert [e["event"] for e in r.events].count("STOP") == 1
    assert "RESUME" not in [e["event"] for e in r.events]


def test_enospc_extends_at_once_without_waiting_for_the_cycle():
    # the threshold at 0 free space never fires first: the ENOSPC starts it
    r = run(scenario(duration="14s", **{"thin-provisioning": {"chunk": "512MiB",
                                                             "utilization-percent": 100,
                                                             "interval": "1h"}}))
    io = [e for e in r.events if e["event"] == "BLOCK_IO_ERROR"][0]
    ext = commands(r, "lv-extend")[0]
    assert ext["timestamp"] == io["timestamp"]
    assert commands(r, "cont")


def test_poll_mode_sets_no_threshold_and_extends_on_a_cycle():
    r = run(scenario(duration="12s", **{"thin-provisioning": {"chunk": "512MiB", "mode": "poll"}}))
    assert not commands(r, "block-set-write-threshold")
    assert not [e for e in r.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    ext = commands(r, "lv-extend")
    assert ext and all(c["timestamp"]["microseconds"] == 0 and c["timestamp"]["seconds"] % 2 == 0
                       for c in ext)


def two_disks(**tp):
    return scenario(duration="30s",
                    images={"disk1": {"size": "4GiB", "lv-size": "1GiB", "pool": "vg"},
                            "disk2": {"size": "4GiB", "lv-size": "1GiB", "pool": "vg"}},
                    drives={"vda": {"image": "disk1"}, "vdb": {"image": "disk2"}},
                    workloads={"w1": {"drive": "vda", "rw": "write", "bs": "1MiB", "rate-iops": 50},
                               "w2": {"drive": "vdb", "rw": "write", "bs": "1MiB", "rate-iops": 50}},
                    **{"thin-provisioning": {"chunk": "512MiB", **tp}})


def test_max_extends_keeps_one_extend_in_flight():
    r = run(two_disks())
    t = [x for x in timeline(r) if x[1] in (">lv-extend", "VOLUME_EXTENDED")]
    in_flight = 0
    for _, what, _ in t:
        in_flight += 1 if what == ">lv-extend" else -1
        assert in_flight <= 1
    assert [x[2]["image"] for x in t if x[1] == ">lv-extend"][:2] == ["disk1", "disk2"]
    r2 = run(two_disks(**{"max-extends": 2}))
    first = commands(r2, "lv-extend")[:2]
    assert first[0]["timestamp"] == first[1]["timestamp"]


def test_pool_queue_runs_extends_one_at_a_time():
    # the controller asks for both at once; the pool's one worker queues the second
    r = run(two_disks(**{"max-extends": 2}))
    done = [e for e in r.events if e["event"] == "VOLUME_EXTENDED"][:2]
    asked = commands(r, "lv-extend")[0]["timestamp"]["seconds"]
    # 1 s each on the storage, one after the other, each + 100 ms refresh
    assert [(d["timestamp"]["seconds"] - asked, d["timestamp"]["microseconds"]) for d in done] == \
        [(1, 100_000), (2, 100_000)]


def test_a_full_pool_fails_the_extend_and_it_is_retried_each_cycle_for_every_volume():
    sc = two_disks()
    sc = load_scenario({**sc.to_dict(), "pools": {"vg": {"size": "3GiB", "extend-latency": "1s",
                                                         "refresh": "100ms"}}, "duration": "40s"})
    r = run(sc)
    failed = [e for e in r.events if e["event"] == "VOLUME_EXTEND_FAILED"]
    assert failed and "no space in volume group 'vg'" in failed[0]["data"]["reason"]
    assert {e["data"]["image"] for e in failed} == {"disk1", "disk2"}
    assert r.summary["vm"]["final_state"] == "io-error"
    assert not commands(r, "cont")


def test_mirror_onto_a_thin_target_is_resumed_after_the_extend():
    sc = load_scenario({
        "duration": "20s",
        "images": {"src": {"size": "1GiB", "data": [{"offset": 0, "length": "768MiB"}]},
                   "dst": {"size": "1GiB", "lv-size": "256MiB", "pool": "vg"}},
        "pools": {"vg": {"extend-latency": "3s"}},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"m": {"type": "mirror", "device": "vda", "target": "dst", "speed": "200MiB",
                       "on-target-error": "enospc", "start": "0s"}},
        "thin-provisioning": {"chunk": "256MiB"}})
    r = run(sc)
    seq = [x[1] for x in timeline(r, {"BLOCK_JOB_ERROR", "VOLUME_EXTENDED", "BLOCK_JOB_READY"})
           if x[1] in ("BLOCK_JOB_ERROR", "VOLUME_EXTENDED", ">block-job-resume", "BLOCK_JOB_READY")]
    i = seq.index("BLOCK_JOB_ERROR")
    assert seq[i:].index("VOLUME_EXTENDED") < seq[i:].index(">block-job-resume")
    assert seq[-1] == "BLOCK_JOB_READY"
    assert [e for e in r.events if e["event"] == "BLOCK_WRITE_THRESHOLD"][0]["data"]["node-name"] \
        == "dst-file"


def _mirror_onto_thin(**tp):
    return load_scenario({
        "duration": "30s",
        "images": {"src": {"size": "2GiB", "data": [{"offset": 0, "length": "1536MiB"}]},
                   "dst": {"size": "2GiB", "lv-size": "256MiB", "pool": "vg"}},
        "pools": {"vg": {"extend-latency": "1s"}},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"m": {"type": "mirror", "device": "vda", "target": "dst", "speed": "100MiB",
                       "on-target-error": "enospc", "start": "0s"}},
        "actions": [{"on": "BLOCK_JOB_READY", "command": "block-job-complete",
                     "arguments": {"device": "m"}}],
        "thin-provisioning": {"chunk": "128MiB", **tp}})


def test_a_mirror_doubles_the_chunk_and_the_free_limit_of_its_volumes_like_vdsm():
    # vdsm Drive.volExtensionChunk: chunk x VOLWM_CHUNK_REPLICATE_MULT (2)
    # while the drive replicates, and watermarkLimit follows it: each extend
    # adds 256 MiB and the threshold is 128 MiB below the end (the job runs
    # from 0 s, when the first one is armed).
    r = run(_mirror_onto_thin())
    sizes = [c["arguments"]["size"] // MiB for c in commands(r, "lv-extend")]
    assert sizes[:3] == [512, 768, 1024]
    armed = [c["arguments"]["write-threshold"] // MiB for c in commands(r, "block-set-write-threshold")]
    assert armed[:3] == [256 - 128, 512 - 128, 768 - 128]
    assert [e["data"]["type"] for e in r.events if e["event"] == "BLOCK_JOB_COMPLETED"] == ["mirror"]
    # replica-mult = 1: vdsm's plain chunk
    r1 = run(_mirror_onto_thin(**{"replica-mult": 1}))
    assert [c["arguments"]["size"] // MiB for c in commands(r1, "lv-extend")][:3] == [384, 512, 640]


def test_latency_distributions_are_seeded_and_within_their_bounds():
    import numpy as np
    from blocksim.model.thin import Latency
    from blocksim.scenario import Latency as Spec
    u = Latency(Spec(distribution="uniform", low="1s", high="3s"), np.random.default_rng(1))
    draws = [u.draw() for _ in range(200)]
    assert min(draws) >= S and max(draws) <= 3 * S and len(set(draws)) > 100
    s = Latency(Spec(distribution="samples", samples=["1s", "5s"]), np.random.default_rng(1))
    assert {s.draw() for _ in range(50)} == {S, 5 * S}
    ln = Latency(Spec(distribution="lognormal", median="2s", sigma=0.5), np.random.default_rng(1))
    med = sorted(ln.draw() for _ in range(2001))[1000]
    assert 1.8 * S < med < 2.2 * S
    again = Latency(Spec(distribution="uniform", low="1s", high="3s"), np.random.default_rng(1))
    assert [again.draw() for _ in range(200)] == draws


def test_runs_are_identical_with_and_without_shortcuts():
    sc = scenario(duration="14s", pools={"vg": {"extend-latency":
                                                {"distribution": "lognormal", "median": "3s",
                                                 "sigma": 0.5}}})
    a = Simulation(sc).run()
    b = Simulation(sc, shortcuts=False).run()
    assert a.events == b.events and a.commands == b.commands


def test_enospc_just_after_an_extend_landed_still_extends_and_resumes():
    # vdsm Drive.on_enospc marks the drive for extension regardless of its
    # allocation.  Here a 64 MiB write in flight when the volume was full
    # fails (ENOSPC) right after VOLUME_EXTENDED re-armed the threshold above
    # the file's end: the controller must still extend once more and cont,
    # not leave the VM paused for good (seen in the sizing sweep: 50 MiB/s,
    # 512 MiB chunks at 75 %, 2 s extends, seed 1, paused from 3890 s on).
    sc = load_scenario({
        "duration": "6h", "seed": 1,
        "images": {"disk": {"size": "2TiB", "lv-size": "4GiB", "pool": "vg", "cluster-size": "2MiB",
                            "latency": "500us", "bandwidth": "2GiB"}},
        "pools": {"vg": {"extend-latency": {"distribution": "lognormal", "median": "2s",
                                            "sigma": 0.5}, "refresh": "200ms"}},
        "drives": {"vda": {"image": "disk", "werror": "enospc"}},
        "workloads": {"guest": {"drive": "vda", "rw": "write", "bs": "64MiB",
                                "rate-iops": 0.78125, "end": "3900s"}},
        "thin-provisioning": {"chunk": "512MiB", "utilization-percent": 75}})
    r = run(sc)
    events = [x for x in timeline(r) if x[1] in ("STOP", "RESUME", "VOLUME_EXTENDED",
                                                  "BLOCK_IO_ERROR", ">lv-extend", ">cont")]
    late = [x[1] for x in events if 3889 < x[0] < 3900]
    # the write fails just after the extend landed; one more extend, then cont
    assert late[:7] == ["VOLUME_EXTENDED", "BLOCK_IO_ERROR", "STOP", ">lv-extend",
                        "VOLUME_EXTENDED", "RESUME", ">cont"], late
    assert r.summary["vm"]["final_state"] == "running"
    assert r.summary["pauses"]["longest"] < 10
