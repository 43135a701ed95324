"""Write thresholds (block/write-threshold.c) and the qcow2 file's physical
layout, against figures measured on QEMU 7.2 by hand: qemu-storage-daemon
with an NBD export of the format node, guest writes by qemu-io
(/tmp/work/thin-exp/exp1.py, exp2.py; transcript in docs/qemu-check.md).
A fresh 64 MiB qcow2 with 64 KiB clusters reaches 4 clusters (header,
refcount table, refcount block, L1); the first write adds an L2 table and a
data cluster (393216); each new data cluster under the same L2 table adds
one cluster."""

import pytest

from blocksim import load_scenario
from blocksim.simulation import Simulation

MiB = 1 << 20


def run(size, thresholds, writes, **image):
    """Thresholds set at 0, then guest writes (offset, length) one at a
    time, 10 ms apart; returns (threshold events, the simulation)."""
    actions = [{"at": "0s", "command": "block-set-write-threshold",
                "arguments": {"node-name": node, "write-threshold": thr}}
               for node, thr in thresholds]
    for i, (offset, length) in enumerate(writes):
        actions.append({"at": f"{10 * (i + 1)}ms", "command": "guest-burst",
                        "arguments": {"drive": "vda", "rw": "write", "bs": length,
                                      "offset": offset, "size": length, "number-ios": 1}})
    actions.append({"at": "900ms", "command": "query-named-block-nodes"})
    sc = load_scenario({"duration": "1s", "images": {"disk": {"size": size, **image}},
                        "drives": {"vda": {"image": "disk"}}, "actions": actions})
    sim = Simulation(sc)
    result = sim.run()
    events = [(e["data"]["node-name"], e["data"]["amount-exceeded"], e["data"]["write-threshold"])
              for e in result.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    return events, sim, result


def query(result):
    answer = [c for c in result.commands if c["execute"] == "query-named-block-nodes"][-1]
    return {n["node-name"]: n["write_threshold"] for n in answer["return"]}


def test_format_node_amount_is_end_minus_threshold_and_it_disarms():
    # a write ending exactly at the threshold does not fire (end > threshold)
    events, _, result = run(64 * MiB, [("disk", MiB)],
                            [(0, 4096), (MiB - 4096, 4096), (MiB - 4096, 8192), (2 * MiB, 4096)])
    assert events == [("disk", 4096, MiB)]          # QEMU: amount-exceeded 4096, once
    assert query(result) == {"disk": 0, "disk-file": 0}


def test_write_zeroes_crosses_the_format_node_threshold_too():
    from blocksim.model.device import BlockDevice  # noqa: F401  (the check is in submit_write_zeroes)
    sc = load_scenario({"duration": "1s", "images": {"d": {"size": "4MiB"}}})
    sim = Simulation(sc)
    dev = sim.devices["d"]
    dev.write_threshold = MiB
    seen = []
    dev.on_threshold = lambda *a: seen.append(a)
    dev.submit_write_zeroes(MiB, 65536)
    assert seen == [("d", 65536, MiB)] and dev.write_threshold == 0


@pytest.mark.parametrize("threshold, amount", [
    # below the L1 cluster: l2_allocate first writes the refcount block
    # (host cluster 2, ends 196608; measured on QEMU 7.2, fz8-278)
    (65536, 131072),
    (150000, 46608),
    (196000, 608),
    (196700, 130980),       # inside the L1 cluster: the L1 entry is written after the L2 table
    (200000, 127680),       # inside the L1 cluster: the L2 table's write (ends 327680) fires
    (300000, 27680),        # inside the L2 table: its own write
    (330000, 63216),        # inside the data cluster: the data write (ends 393216)
])
def test_protocol_node_first_allocation_writes_l2_table_then_data(threshold, amount):
    events, _, _ = run(64 * MiB, [("disk-file", threshold)], [(0, 4096)])
    assert events == [("disk-file", amount, threshold)]


def test_protocol_node_a_small_write_allocates_a_whole_cluster():
    # qcow2 zeroes the whole new cluster first (handle_alloc_space): the
    # write ends at the cluster's end, wherever the 4 KiB lie in it
    for offset in (10 * MiB, 10 * MiB + 61440):
        events, sim, _ = run(64 * MiB, [("disk-file", 425984)], [(0, 4096), (offset, 4096)])
        assert events == [("disk-file", 32768, 425984)]
        assert sim.devices["disk"].physical_size == 458752


def test_protocol_node_a_new_l2_table_every_512_mib():
    events, sim, _ = run(2048 * MiB, [("disk-file", 458753)], [(0, 4096), (512 * MiB, 4096)])
    assert events == [("disk-file", 65535, 458753)]
    assert sim.devices["disk"].physical_size == 524288


def test_physical_size_of_a_fresh_and_written_image():
    _, sim, _ = run(64 * MiB, [], [])
    assert sim.devices["disk"].physical_size == 4 * 65536
    _, sim, _ = run(64 * MiB, [], [(0, 4096)])
    assert sim.devices["disk"].physical_size == 393216


def test_lv_size_fails_an_allocation_past_the_volume_with_enospc():
    # 4 metadata clusters + L2 + 2 data clusters = 7 clusters fit in 7 x 64 KiB
    events, sim, result = run(64 * MiB, [], [(0, 65536), (MiB, 65536), (2 * MiB, 65536)],
                              **{"lv-size": 7 * 65536})
    errors = [e["data"] for e in result.events if e["event"] == "BLOCK_IO_ERROR"]
    assert len(errors) == 1 and errors[0]["nospace"] is True
    assert sim.devices["disk"].physical_size == 7 * 65536


def test_a_threshold_keeps_shortcuts_from_skipping_the_check():
    # the same run with shortcuts and without: the guest's quiet stretch
    # must not take writes past an armed threshold in bulk
    sc = load_scenario({"duration": "2s", "images": {"disk": {"size": "64MiB"}},
                        "drives": {"vda": {"image": "disk"}},
                        "workloads": {"w": {"drive": "vda", "rw": "write", "bs": "64KiB",
                                            "rate-iops": 200}},
                        "actions": [{"at": "0s", "command": "block-set-write-threshold",
                                     "arguments": {"node-name": "disk-file",
                                                   "write-threshold": 10 * MiB}}]})
    a = Simulation(sc).run()
    b = Simulation(sc, shortcuts=False).run()
    ev = [e for e in a.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    assert ev and ev == [e for e in b.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]


def test_a_streams_copy_on_read_skips_the_top_format_nodes_threshold():
    # QEMU 7.2 (scenarios/qemu/threshold-stream-top): bdrv_co_do_copy_on_readv
    # writes with bdrv_driver_pwritev, past the format node's check; the
    # qcow2 driver's own writes reach the file node's
    sc = load_scenario({
        "duration": "3s",
        "images": {"base": {"size": "4MiB", "data": "full"}, "top": {"size": "4MiB", "backing": "base"}},
        "drives": {"vda": {"image": "top"}},
        "jobs": {"s": {"type": "stream", "device": "vda", "speed": "8MiB", "start": "200ms"}},
        "actions": [{"at": "0s", "command": "block-set-write-threshold",
                     "arguments": {"node-name": n, "write-threshold": MiB + 1}}
                    for n in ("top", "top-file")]})
    result = Simulation(sc).run()
    events = [(e["data"]["node-name"], e["data"]["amount-exceeded"])
              for e in result.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]
    assert events == [("top-file", 327679)]


def test_protocol_node_a_write_into_allocated_clusters_crosses_at_their_host_offset():
    """qcow2_co_pwritev_task writes allocated clusters at their host offset
    (header, refcount table and block, L1, the L2 table, then the data in
    disk order for an image written in ascending order): on QEMU 7.2 a
    commit into a fully allocated 4 MiB base rewriting [1600 KiB, +1 MiB)
    crossed base-file's threshold at 393216 by 2621440 (grammar 9, fz9-18)."""
    events, _, _ = run(4 * MiB, [("disk-file", 393216)], [(1638400, MiB)], data="full")
    assert events == [("disk-file", 2621440, 393216)]
    # cluster 0 lies at host cluster 5: its write ends at 393216, not past it;
    # 4 KiB into cluster 1 (host 6) end 8192 past it
    events, _, _ = run(4 * MiB, [("disk-file", 393216)], [(0, 65536), (69632, 4096)], data="full")
    assert events == [("disk-file", 8192, 393216)]


def test_protocol_node_clusters_allocated_under_a_threshold_lie_at_the_file_end():
    """QEMU appends clusters in the order they are allocated: on QEMU 7.2
    a stream's copy-on-read allocated [1792 KiB, 2304 KiB) of a top holding
    clusters 2, 3 and 47..63 at the file's end (host clusters 24..31), and a
    guest write into its second cluster then crossed top-file's threshold
    at 1638912 by 65024 (grammar 9, fz9-57)."""
    sc = load_scenario({"duration": "1s", "images": {"d": {
        "size": "4MiB", "data": [{"offset": "131072", "length": "131072"},
                                 {"offset": "3080192", "length": "1114112"}]}}})
    dev = Simulation(sc).devices["d"]
    seen = []
    dev.on_threshold = lambda *a: seen.append(a)
    dev.file_write_threshold = 1572864
    dev.submit_write(1835008, 524288)
    assert seen == [("d-file", 524288, 1572864)]
    dev.file_write_threshold = 1638912
    dev.submit_write(1835008, 65536)            # host cluster 24: ends 1638400
    dev.submit_write(3080192, 65536)            # cluster 47, host 7 (disk order)
    assert len(seen) == 1
    dev.submit_write(1900544, 65536)            # host cluster 25
    assert seen[1:] == [("d-file", 65024, 1638912)]


def test_protocol_node_a_write_over_an_allocated_cluster_allocates_each_run_in_turn():
    """qcow2_co_pwritev_part writes a request in pieces of host-contiguous
    clusters (qcow2_alloc_host_offset stops a new run at the next
    allocated cluster) and starts each piece's write before it allocates
    the next, so the first run of new clusters crosses the protocol node's
    threshold with its own end, not the end of all the request's new
    clusters: on QEMU 7.2 an intermediate commit's 512 KiB chunk over a
    base cluster already allocated crossed base-file's threshold one
    cluster earlier than blocksim (grammar 9, fz9-2025;
    scenarios/qemu/threshold-protocol-node-write-allocates-run-by-run).
    Here: cluster 3 allocated (host 5, the file 6 clusters long), a write
    of clusters 0..7 allocates 0..2 at hosts 6..8 (the file ends at 9
    clusters, 589824), rewrites 3 at host 5, allocates 4..7 at 9..12."""
    events, sim, _ = run(4 * MiB, [("disk-file", 409600)], [(0, MiB // 2)],
                         data=[{"offset": 196608, "length": 65536}])
    assert events == [("disk-file", 589824 - 409600, 409600)]
    assert sim.devices["disk"].physical_size == 13 * 65536
