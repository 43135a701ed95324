"""Limits (issue 19): what validation refuses before a run could exhaust the
machine, one located line each with the estimate and the limit."""

import time

import pytest

from blocksim.errors import ScenarioError
from blocksim.scenario import load_scenario
from blocksim.scenario import limits
from blocksim.scenario.limits import Limits, max_image_size


def scenario(**extra):
    raw = {"duration": "10s", "images": {"a": {"size": "1GiB"}, "b": {"size": "1GiB"}},
           "drives": {"d": {"image": "a"}}}
    raw.update(extra)
    return raw


def problems(source, lim=None):
    with pytest.raises(ScenarioError) as info:
        load_scenario(source, limits=lim)
    assert all("\n" not in msg for _, msg in info.value.problems)
    return info.value.problems


def one(source, lim=None):
    found = problems(source, lim)
    assert len(found) == 1, found
    return found[0]


# -- absurd sizes ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2**80, str(2**80), "1048576EiB", 2**63])
def test_a_size_beyond_qemus_bdrv_max_length_is_one_clean_error(size):
    path, msg = one(scenario(images={"a": {"size": size}}))
    assert path == "images.a.size"
    assert "at most 2**63 - 2**30 bytes (QEMU's BDRV_MAX_LENGTH)" in msg


def test_a_qcow2_image_is_bounded_by_its_l1_table_as_qemu_img_says():
    # qemu-img 7.2: create -f qcow2 x 2P works, 2P+64K "The image size is too large"
    assert max_image_size("qcow2", 64 * 1024) == 2 * 1024**5
    assert max_image_size("qcow2", 512) == 128 * 1024**3
    assert max_image_size("raw", 512) == limits.BDRV_MAX_LENGTH
    path, msg = one(scenario(images={"a": {"size": "64PiB"}}))
    assert path == "images.a.size"
    assert msg.startswith("64PiB is larger than QEMU accepts for a qcow2 image with 64KiB clusters")
    assert msg.endswith("at most 2PiB")
    path, msg = one(scenario(images={"a": {"size": "129GiB", "cluster-size": 512}}))
    assert "at most 128GiB" in msg


def test_a_run_holding_too_much_for_its_virtual_sizes_is_refused_with_the_estimate():
    raw = scenario(images={"a": {"size": "1PiB"}, "b": {"size": "1PiB"}},
                   jobs={"j": {"type": "mirror", "device": "d", "target": "b"}})
    path, msg = one(raw)
    assert path == "images.a.size"
    assert "a run would hold about" in msg and "job 'j': dirty bitmap: 16.28GiB" in msg
    assert msg.endswith("at most 4GiB (smaller images, larger granularity, or --max-memory)")
    load_scenario(raw, limits=Limits(max_memory=64 * 1024**3))      # overridable
    # a 64 TiB raw disk (they exist) is fine
    load_scenario(scenario(images={"a": {"size": "64TiB", "format": "raw"},
                                   "b": {"size": "64TiB", "format": "raw"}},
                           jobs={"j": {"type": "mirror", "device": "d", "target": "b"}}))


def test_a_huge_exponent_is_refused_before_it_is_worked_out():
    started = time.monotonic()
    found = problems(scenario(duration="1e999999999s", images={"a": {"size": "1e99999999999"}}))
    assert time.monotonic() - started < 2
    assert [p for p, _ in found] == ["duration", "images.a.size"]
    assert all("out of range (exponent beyond +-40)" in m for _, m in found)


# -- durations and samples ------------------------------------------------------------------
@pytest.mark.parametrize("duration", ["1e30s", "3000000h"])
def test_an_absurd_duration_is_refused(duration):
    path, msg = one(scenario(duration=duration))
    assert path == "duration"
    assert "is more than a duration may be: at most 87600h (ten years)" in msg


def test_too_many_samples_is_refused_with_the_estimate_and_the_limit():
    path, msg = one(scenario(duration="1h", **{"sample-interval": "1ns"}))
    assert (path, msg) == ("sample-interval", "3.6e12 samples over duration 1h; at most 1e6 "
                                              "(raise sample-interval, or --max-samples)")
    load_scenario(scenario(duration="1h", **{"sample-interval": "1ms"}),
                  limits=Limits(max_samples=10_000_000))


# -- guest requests ---------------------------------------------------------------------
def test_a_workload_estimated_beyond_max_requests_is_refused():
    raw = scenario(duration="1h", workloads={"w": {"drive": "d", "rate-iops": 1e9}})
    path, msg = one(raw)
    assert path == "workloads.w"
    assert msg.startswith("3.6e12 guest requests over duration 1h (rate-iops 1e9 for 1h); at most 1e8")
    # a max-requests the run stops at makes it bounded
    load_scenario({**raw, "max-requests": 1000})
    path, msg = one({**raw, "max-requests": 10**12})
    assert (path, msg) == ("max-requests", "1e12; at most 1e8 (--max-requests)")


def test_a_closed_loop_taking_no_simulated_time_is_unbounded():
    raw = scenario(duration="1s", images={"a": {"size": "1GiB", "latency": 0, "bandwidth": "1EiB"}},
                   workloads={"w": {"drive": "d"}})
    path, msg = one(raw)
    assert path == "workloads.w" and msg.startswith("unbounded guest requests over duration 1s")


def test_the_benchmarks_hour_of_guest_writes_on_1tib_passes():
    load_scenario(scenario(duration="1h", images={"a": {"size": "1TiB", "data": "full"},
                                                  "b": {"size": "1TiB"}},
                           workloads={"w": {"drive": "d", "rate-iops": 1000}},
                           jobs={"j": {"type": "mirror", "device": "d", "target": "b"}}))


# -- the file ---------------------------------------------------------------------------
def test_more_images_than_the_content_journal_holds_is_refused():
    from blocksim.engine.journal import MAX_MAPS
    assert limits.MAX_IMAGES == MAX_MAPS
    path, msg = one({"images": {f"i{n}": {"size": "1MiB"} for n in range(600)}})
    assert path == "images"
    assert msg.startswith("600 images; at most 512")


def test_deep_nesting_is_one_located_error_never_a_recursion_error(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    path, msg = one(deep)
    assert path == "" and "nested too deeply" in msg
    nested = tmp_path / "nested.toml"
    nested.write_text('[images.a]\nsize = "1G"\nx = ' + "[" * 100 + "]" * 100 + "\n")
    path, msg = one(nested)
    assert path.startswith("images.a.x.0.0") and msg.startswith("nested more than 16 levels deep")
    value: list = []
    for _ in range(3000):
        value = [value]
    path, msg = one({"images": {"a": {"size": "1G"}}, "x": value})
    assert "nested" in msg


def test_long_names_and_keys_are_refused_with_their_length():
    found = problems(scenario(name="n" * 5000, images={"k" * 300: {"size": "1M"}},
                              drives={}))
    assert ("name", "5000 characters; at most 1024") in found
    key = [(p, m) for p, m in found if p.startswith("images.")]
    assert key and key[0][1] == "a key of 300 characters; at most 255" and len(key[0][0]) < 60


def test_a_large_file_is_refused_quickly_without_being_read(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(50 * 1000 * 1000)            # 50 MB, sparse
    started = time.monotonic()
    path, msg = one(big)
    assert time.monotonic() - started < 1
    assert msg == "file of 47.68MiB; a scenario file is at most 1MiB"


def test_a_byte_order_mark_is_named(tmp_path):
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbf[images.a]\nsize = "1M"\n')
    path, msg = one(bom)
    assert msg.startswith("starts with a UTF-8 byte order mark (BOM)")


def test_an_integer_too_long_for_python_is_invalid_toml(tmp_path):
    path = tmp_path / "long.toml"
    path.write_text("seed = " + "9" * 5000 + "\n")
    _, msg = one(path)
    assert msg.startswith("invalid TOML: Exceeds the limit (4300 digits)")


def test_the_library_keeps_within_the_limits():
    from blocksim.scenario.library import library_dir
    for path in sorted(library_dir().glob("*.toml")):
        load_scenario(path)


def test_absurd_queue_depths_and_worker_counts_are_refused():
    path, msg = one(scenario(images={"a": {"size": "1GiB", "queue-depth": 2**62}}))
    assert (path, msg) == ("images.a.queue-depth", "4.6e18; at most 65536 (the largest queue a "
                                                   "device offers: NVMe's 65536 entries)")
    path, msg = one(scenario(workloads={"w": {"drive": "d", "iodepth": 10**9, "number-ios": 10}}))
    assert path == "workloads" and msg.startswith("1e9 guest workers")
    path, msg = one(scenario(actions=[{"at": 1, "command": "guest-burst",
                                       "arguments": {"drive": "d", "iodepth": 10**6}}]))
    assert path == "workloads" and msg.startswith("1e6 guest workers")
