"""The guest's ledger: what the drive believes it wrote, read back a page at a time."""

import blocksim
from blocksim.extents import ExtentMap


def drive_after(workload: dict, size: str = "4MiB"):
    sim = blocksim.Simulation(blocksim.load_scenario({
        "duration": "10s",
        "images": {"disk": {"size": size}},
        "drives": {"vda": {"image": "disk"}},
        "workloads": {"w": {"drive": "vda", **workload}},
    }))
    sim.run()
    return sim.drives["vda"]


def joined(parts, size) -> list:
    m = ExtentMap(size)
    for part, start, end in parts:
        m.set_runs([r for r in part.runs(start, end) if r[2]])
    return m.runs()


def test_pages_of_the_ledger_add_up_to_the_whole_and_match_the_disk():
    # 24 KiB blocks straddle the 64 KiB-aligned pages used below
    drive = drive_after({"rw": "randwrite", "bs": "24KiB", "number-ios": 400})
    size = drive.node.size
    parts = list(drive.expected_parts(step=64 * 1024))
    assert len(parts) > 10
    assert all(start % (64 * 1024) == 0 for _part, start, _end in parts)
    whole = drive.expected_content()
    assert joined(parts, size) == whole.runs()
    # every write landed: the disk reads what the guest believes
    assert [r for r in drive.node.read_content(0, size) if r[2]] == \
        [r for r in whole.runs() if r[2]]


def test_mixed_sizes_fall_back_to_one_map():
    drive = drive_after({"rw": "write", "bs": "4KiB", "number-ios": 10})
    drive._ledger.append(100 * 512, 512, 10**6)       # one odd-sized write
    parts = list(drive.expected_parts())
    assert len(parts) == 1 and parts[0][1:] == (0, drive.node.size)
    assert parts[0][0].value_at(100 * 512) == 10**6
