import copy
import json

import pydantic
import pytest

from blocksim.errors import CommandError, ScenarioError
from blocksim.scenario import (
    BlockJobSetSpeedAction,
    DelayFault,
    DustFault,
    ErrorFault,
    FlakeyFault,
    GuestBurstAction,
    Image,
    JobIdAction,
    MirrorJob,
    Scenario,
    StreamJob,
    Workload,
    apply_overrides,
    burst_workload_spec,
    load_scenario,
    scenario_json_schema,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3
S, MS, US = 1_000_000_000, 1_000_000, 1_000

FULL = """\
name = "mirror-demo"
description = "mirror to a thin target"
profile = "rfc-2012"
duration = "2min"
seed = 7
sample-interval = "250ms"
max-events = 5000

[images.base]
size = "1GiB"
format = "raw"
data = "full"

[images.src]
size = "1GiB"
backing = "base"
cluster-size = "128K"
latency = "50us"
bandwidth = "500MiB/s"
queue-depth = 8
jitter = 0.1
data = [{offset = 0, length = "1MiB"}, {offset = "2MiB", length = "4KiB"}]

[images.dst]
size = "1GiB"
capacity = "512MiB"

[drives.vda]
image = "src"
rerror = "stop"
werror = "enospc"

[[faults]]
image = "dst"
operation = "write"
errno = "ENOSPC"
offset = "1MiB"
count = "once"
start = "1s"
end = "5s"
probability = 0.5

[[faults]]
image = "dst"
type = "flakey"
up = "10s"
down = "500ms"
drop-writes = true
operation = ["read", "write"]

[[faults]]
image = "src"
type = "dust"
blocks = [3, 1000]
block-size = "4K"
operation = "read"

[[faults]]
image = "base"
type = "delay"
delay = "20ms"
skip = 10

[workloads.fio]
drive = "vda"
rw = "randrw"
rwmixread = 70
bs = "16K"
iodepth = 4
rate-iops = 200
think-time = "1ms"
offset = "1MiB"
start = "2s"
end = "100s"
number-ios = 100000

[jobs.job0]
type = "mirror"
device = "vda"
target = "dst"
speed = "100MiB"
sync = "top"
granularity = "1M"
buf-size = "32M"
on-source-error = "ignore"
on-target-error = "stop"
auto-finalize = false

[jobs.st]
type = "stream"
device = "vda"
base = "base"
start = "manual"
on-error = "enospc"

[[actions]]
on = "BLOCK_JOB_ERROR"
match = {device = "job0", operation = "write"}
delay = "5s"
repeat = true
command = "block-job-resume"
arguments = {device = "job0"}

[[actions]]
at = "30s"
command = "thin-extend"
arguments = {image = "dst", by = "1GiB"}

[[actions]]
at = 40
command = "block-job-set-speed"
arguments = {device = "job0", speed = "1G"}

[[actions]]
at = 45
command = "guest-burst"
arguments = {drive = "vda", bs = "64K", number-ios = 10, offset = "512MiB"}

[[actions]]
at = 50
command = "job-start"
arguments = {id = "st"}

[[actions]]
on = "BLOCK_JOB_READY"
command = "block-job-complete"
arguments = {device = "job0"}
"""


def minimal(**extra):
    raw = {"images": {"disk": {"size": "1GiB"}, "tgt": {"size": "1GiB"}},
           "drives": {"vda": {"image": "disk"}}}
    raw.update(extra)
    return raw


@pytest.fixture
def full(tmp_path):
    path = tmp_path / "demo-file.toml"
    path.write_text(FULL)
    return path


def problems_of(source, overrides=None):
    with pytest.raises(ScenarioError) as info:
        load_scenario(source, overrides)
    return info.value.problems


def only_problem(source, overrides=None):
    problems = problems_of(source, overrides)
    assert len(problems) == 1, problems
    return problems[0]


# -- a complete scenario ------------------------------------------------------------

def test_full_scenario_resolves(full):
    s = load_scenario(full)
    assert s.source == str(full)
    assert (s.name, s.description, s.profile) == ("mirror-demo", "mirror to a thin target", "rfc-2012")
    assert (s.duration, s.seed, s.sample_interval, s.max_events) == (120 * S, 7, 250 * MS, 5000)

    assert list(s.images) == ["base", "src", "dst"]  # file order
    src = s.images["src"]
    assert (src.size, src.cluster_size, src.format, src.backing) == (GiB, 128 * KiB, "qcow2", "base")
    assert (src.latency, src.bandwidth, src.queue_depth, src.jitter) == (50 * US, 500 * MiB, 8, 0.1)
    assert src.data == [(0, MiB), (2 * MiB, 4 * KiB)]
    assert s.images["base"].data == [(0, GiB)]
    assert s.images["dst"].capacity == 512 * MiB and s.images["dst"].data == []

    assert (s.drives["vda"].rerror, s.drives["vda"].werror) == ("stop", "enospc")

    error, flakey, dust, delay = s.faults
    assert isinstance(error, ErrorFault) and error.type == "error"
    assert error.operation == ("write",) and error.errno == "ENOSPC"
    assert (error.offset, error.length) == (MiB, GiB - MiB)  # length resolved to the end
    assert (error.count, error.start, error.end, error.probability) == (1, S, 5 * S, 0.5)
    assert isinstance(flakey, FlakeyFault)
    assert (flakey.up, flakey.down, flakey.drop_writes) == (10 * S, 500 * MS, True)
    assert flakey.operation == ("read", "write") and flakey.count is None
    assert isinstance(dust, DustFault) and (dust.blocks, dust.block_size) == ([3, 1000], 4 * KiB)
    assert isinstance(delay, DelayFault) and (delay.delay, delay.skip) == (20 * MS, 10)

    w = s.workloads["fio"]
    assert (w.drive, w.rw, w.rwmixread, w.bs, w.iodepth) == ("vda", "randrw", 70, 16 * KiB, 4)
    assert (w.rate_iops, w.think_time, w.offset, w.size) == (200.0, MS, MiB, GiB - MiB)
    assert (w.start, w.end, w.number_ios) == (2 * S, 100 * S, 100000)

    job0, st = s.jobs["job0"], s.jobs["st"]
    assert isinstance(job0, MirrorJob) and isinstance(st, StreamJob)
    assert (job0.device, job0.target, job0.speed, job0.sync) == ("vda", "dst", 100 * MiB, "top")
    assert (job0.granularity, job0.buf_size, job0.start) == (MiB, 32 * MiB, 0)
    assert (job0.on_source_error, job0.on_target_error) == ("ignore", "stop")
    assert (job0.auto_finalize, job0.auto_dismiss) == (False, True)
    assert (st.start, st.base, st.on_error) == (None, "base", "enospc")

    a = s.actions
    assert (a[0].on, a[0].at, a[0].delay, a[0].repeat) == ("BLOCK_JOB_ERROR", None, 5 * S, True)
    assert a[0].match == {"device": "job0", "operation": "write"}
    assert (a[0].command, a[0].arguments) == ("block-job-resume", {"device": "job0"})
    assert (a[1].at, a[1].arguments) == (30 * S, {"image": "dst", "by": GiB})
    assert isinstance(a[2], BlockJobSetSpeedAction) and a[2].arguments == {"device": "job0", "speed": GiB}
    assert isinstance(a[3], GuestBurstAction)
    assert a[3].arguments == {"drive": "vda", "rw": "randwrite", "bs": 64 * KiB, "iodepth": 1,
                              "number-ios": 10, "offset": 512 * MiB, "size": 512 * MiB}
    assert isinstance(a[4], JobIdAction) and a[4].arguments == {"id": "st"}
    assert a[5].on == "BLOCK_JOB_READY" and a[5].repeat is False and a[5].match == {}


def test_defaults():
    s = load_scenario({"images": {"d": {"size": 4096}}, "drives": {"v": {"image": "d"}},
                       "faults": [{"image": "d"}], "workloads": {"w": {"drive": "v"}},
                       "jobs": {"j": {"type": "stream", "device": "v"}},
                       "actions": [{"at": 1, "command": "block-job-cancel",
                                    "arguments": {"device": "j"}}]})
    assert s.source == "<dict>"
    assert (s.name, s.description, s.profile, s.duration, s.seed) == ("scenario", "", "qemu", 60 * S, 0)
    assert (s.sample_interval, s.max_events) == (100 * MS, 1_000_000)
    assert s.images["d"] == Image(size=4096)
    i = s.images["d"]
    assert (i.cluster_size, i.format, i.backing, i.capacity, i.latency) == (64 * KiB, "qcow2", None, None, 100 * US)
    assert (i.bandwidth, i.queue_depth, i.jitter, i.data) == (GiB, 32, 0.0, [])
    assert (s.drives["v"].rerror, s.drives["v"].werror) == ("report", "enospc")
    f = s.faults[0]
    assert (f.type, f.operation, f.errno, f.offset, f.length) == ("error", ("flush", "read", "write", "write-zeroes"), "EIO", 0, 4096)
    assert (f.count, f.skip, f.start, f.end, f.probability) == (None, 0, 0, None, 1.0)
    w = s.workloads["w"]
    assert (w.rw, w.rwmixread, w.bs, w.iodepth, w.rate_iops, w.think_time) == ("randwrite", 50, 4096, 1, None, 0)
    assert (w.offset, w.size, w.start, w.end, w.number_ios) == (0, 4096, 0, None, None)
    j = s.jobs["j"]
    assert (j.speed, j.start, j.auto_finalize, j.auto_dismiss, j.on_error, j.base) == (0, 0, True, True, "report", None)
    assert (s.actions[0].delay, s.actions[0].match, s.actions[0].repeat) == (0, {}, False)
    assert s.actions[0].arguments == {"device": "j", "force": False}


def test_mirror_defaults():
    s = load_scenario(minimal(jobs={"m": {"type": "mirror", "device": "vda", "target": "tgt"}}))
    m = s.jobs["m"]
    assert (m.sync, m.granularity, m.buf_size, m.on_source_error, m.on_target_error) == \
        ("full", None, 16 * MiB, "report", "report")    # None: the target's default


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-run.toml"
    path.write_text('[images.a]\nsize = "1M"\n')
    assert load_scenario(path).name == "my-run"
    assert load_scenario(str(path)).source == str(path)


def test_underscore_spelling_is_accepted():
    s = load_scenario(minimal(sample_interval="1s", max_events=10,
                              workloads={"w": {"drive": "vda", "rate_iops": 5, "think_time": "1ms"}}))
    assert (s.sample_interval, s.max_events) == (S, 10)
    assert (s.workloads["w"].rate_iops, s.workloads["w"].think_time) == (5.0, MS)


def test_operation_any_and_lists():
    s = load_scenario(minimal(faults=[{"image": "disk", "operation": "any"},
                                      {"image": "disk", "operation": ["write", "flush", "write"]},
                                      {"image": "disk", "operation": ["read", "any"]},
                                      {"image": "disk", "operation": "write-zeroes"}]))
    every = ("flush", "read", "write", "write-zeroes")
    assert [f.operation for f in s.faults] == [every, ("flush", "write"), every,
                                               ("write-zeroes",)]


def test_models_are_frozen(full):
    s = load_scenario(full)
    with pytest.raises(pydantic.ValidationError):
        s.name = "other"
    with pytest.raises(pydantic.ValidationError):
        s.images["src"].size = 1
    with pytest.raises(pydantic.ValidationError):
        s.faults[0].errno = "EPERM"


def test_round_trip(full):
    s = load_scenario(full)
    d = s.to_dict()
    json.dumps(d)  # plain JSON-able data
    again = load_scenario(d)
    assert again == s
    assert again.source == "<dict>"
    assert again.to_dict() == d
    assert load_scenario(json.loads(json.dumps(d))) == s


def test_to_dict_spelling_and_units(full):
    d = load_scenario(full).to_dict()
    assert d["sample-interval"] == 0.25 and d["duration"] == 120.0 and d["max-events"] == 5000
    assert d["images"]["src"]["cluster-size"] == 128 * KiB and d["images"]["src"]["latency"] == 0.00005
    assert d["images"]["src"]["data"] == [{"offset": 0, "length": MiB}, {"offset": 2 * MiB, "length": 4096}]
    assert "capacity" not in d["images"]["src"]  # absent stays absent
    assert d["faults"][0]["operation"] == ["write"] and d["faults"][0]["count"] == 1
    assert d["faults"][1]["drop-writes"] is True
    assert d["jobs"]["st"]["start"] == "manual" and d["jobs"]["job0"]["start"] == 0.0
    assert d["jobs"]["job0"]["buf-size"] == 32 * MiB
    assert d["actions"][3]["arguments"]["number-ios"] == 10
    assert "at" not in d["actions"][0] and "on" not in d["actions"][1]


def test_equality_ignores_source_only(full):
    a = load_scenario(full)
    b = load_scenario(a.to_dict())
    assert a.source != b.source and a == b
    assert a != load_scenario(full, {"seed": 8})


def test_direct_model_validation_still_checks_references():
    with pytest.raises(pydantic.ValidationError, match="drives.vda.image: unknown image 'nope'"):
        Scenario.model_validate({"images": {"a": {"size": 512}}, "drives": {"vda": {"image": "nope"}}})


# -- problems: wording and key paths ------------------------------------------------

def test_error_lines_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[images.a]\nsize = "1000"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: images.a.size: must be a multiple of 512 bytes, got 1000"
    assert info.value.source == str(path)


def test_toml_syntax_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[images.a]\nsize = \n')
    path_, message = only_problem(path)
    assert path_ == ""
    assert message.startswith("invalid TOML: ") and "line 2, column 8" in message


def test_missing_file(tmp_path):
    assert only_problem(tmp_path / "nope.toml") == ("", "no such file")
    assert only_problem(tmp_path) == ("", "is a directory, not a scenario file")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    assert only_problem(path)[1].startswith("not UTF-8 text")


def test_source_of_wrong_kind():
    with pytest.raises(ScenarioError, match="a path to a TOML file or a dict, not int"):
        load_scenario(42)


def test_all_problems_are_reported():
    raw = minimal(seed=-1, images={"disk": {"size": "1000"}, "tgt": {"size": "1GiB", "format": "vmdk"}},
                  drives={"vda": {"image": "disk"}, "vdb": {"image": "missing"}},
                  faults=[{"image": "disk", "errno": "ENOENT"}],
                  jobs={"j": {"type": "mirror", "device": "vdz", "target": "tgt"}})
    paths = [p for p, _ in problems_of(raw)]
    # in the order of the data (a file's order): images and drives first here
    assert paths == ["images.disk.size", "images.tgt.format", "drives.vdb.image", "seed",
                     "faults.0.errno", "jobs.j.device"]


def test_invalid_entry_does_not_cause_false_reference_errors():
    # 'disk' is invalid, but it exists: the drive that names it is fine.
    assert only_problem(minimal(images={"disk": {"size": -1}}))[0] == "images.disk.size"


SIZES = "B, K/KiB/KB, M/MiB/MB, G/GiB/GB, T/TiB/TB"
DURATIONS = "ns, us, ms, s, min or h"
JOB_KEYS = "type, device, speed, start, auto-finalize, auto-dismiss"
FAULT_KEYS = "image, type, operation, errno, offset, length, count, skip, start, end, probability"

BAD = [
    # top level
    ({"nmae": "x"}, "nmae", "unknown key (did you mean 'name'?); allowed keys: name, description, profile, "
     "duration, seed, sample-interval, max-events, max-requests, images, drives, faults, workloads, jobs, actions"),
    ({"name": 5}, "name", "Input should be a valid string (got 5)"),
    ({"profile": "qemu-9"}, "profile", "Input should be 'qemu' or 'rfc-2012' (got 'qemu-9')"),
    ({"duration": 0}, "duration", "must be greater than 0"),
    ({"duration": "-1s"}, "duration", "invalid duration '-1s': must not be negative"),
    ({"duration": "1 fortnight"}, "duration", DURATIONS),
    ({"duration": True}, "duration", "not a boolean"),
    ({"seed": -1}, "seed", "Input should be greater than or equal to 0 (got -1)"),
    ({"seed": 1.5}, "seed", "Input should be a valid integer (got 1.5)"),
    ({"seed": True}, "seed", "Input should be a valid integer (got true)"),
    ({"sample-interval": "0ms"}, "sample-interval", "must be greater than 0"),
    ({"max-events": 0}, "max-events", "Input should be greater than 0 (got 0)"),
    # images
    ({"images": {}, "drives": {}}, "images", "at least one image is required"),
    ({"images": [1], "drives": {}}, "images", "must be a table of images ([images.NAME]) (got an array)"),
    ({"images.disk": 5}, "images.disk", "must be a table (got 5)"),
    ({"images.disk.sise": 1}, "images.disk.sise", "unknown key (did you mean 'size'?); allowed keys: size, "
     "cluster-size, format, backing, capacity, latency, bandwidth, queue-depth, jitter, discard, data"),
    ({"images.disk": {}}, "images.disk.size", "required key is missing"),
    ({"images.disk.size": "big"}, "images.disk.size", SIZES),
    ({"images.disk.size": "1000"}, "images.disk.size", "must be a multiple of 512 bytes, got 1000"),
    ({"images.disk.size": 0}, "images.disk.size", "must be greater than 0"),
    ({"images.disk.size": "-1M"}, "images.disk.size", "must not be negative"),
    ({"images.disk.size": False}, "images.disk.size", "not a boolean"),
    ({"images.disk.cluster-size": "3K"}, "images.disk.cluster-size",
     "must be a power of two from 512B to 2MiB, got 3072"),
    ({"images.disk.cluster-size": "4M"}, "images.disk.cluster-size", "from 512B to 2MiB"),
    ({"images.disk.format": "vmdk"}, "images.disk.format", "Input should be 'qcow2' or 'raw' (got 'vmdk')"),
    ({"images.disk.backing": "nope"}, "images.disk.backing", "unknown image 'nope'; defined images: disk, tgt"),
    ({"images.disk.format": "raw", "images.disk.backing": "tgt"}, "images.disk.backing",
     "only qcow2 images can have a backing image"),
    ({"images.disk.backing": "disk"}, "images.disk.backing",
     "backing chain loops back to this image: disk -> disk"),
    ({"images.disk.capacity": "lots"}, "images.disk.capacity", SIZES),
    ({"images.disk.latency": "fast"}, "images.disk.latency", DURATIONS),
    ({"images.disk.bandwidth": 0}, "images.disk.bandwidth", "must be greater than 0"),
    ({"images.disk.bandwidth": "1 GB/min"}, "images.disk.bandwidth",
     "invalid rate '1 GB/min': expected bytes per second"),
    ({"images.disk.queue-depth": 0}, "images.disk.queue-depth", "Input should be greater than or equal to 1"),
    ({"images.disk.jitter": -0.1}, "images.disk.jitter", "Input should be greater than or equal to 0"),
    ({"images.disk.data": "half"}, "images.disk.data",
     "must be 'none', 'full' or an array of {offset, length} tables"),
    ({"images.disk.data": [{"offset": "1GiB", "length": 512}]}, "images.disk.data",
     "extent 0 (offset 1073741824, length 512) ends beyond the image size (1073741824)"),
    ({"images.disk.data": [{"offset": 0, "length": 512, "size": 512}]}, "images.disk.data.0.size",
     "unknown key; allowed keys: offset, length"),
    ({"images.disk.data": [{"offset": 0, "length": 0}]}, "images.disk.data.0.length", "must be greater than 0"),
    # drives
    ({"drives.vda": {}}, "drives.vda.image", "required key is missing"),
    ({"drives.vda.image": "nope"}, "drives.vda.image", "unknown image 'nope'; defined images: disk, tgt"),
    ({"drives.vda.rerror": "retry"}, "drives.vda.rerror",
     "Input should be 'report', 'ignore', 'stop', 'enospc' or 'auto' (got 'retry')"),
    ({"drives.vda.werror": "pause"}, "drives.vda.werror",
     "Input should be 'report', 'ignore', 'stop', 'enospc' or 'auto' (got 'pause')"),
    ({"drives.vda.cache": "none"}, "drives.vda.cache", "unknown key; allowed keys: image, rerror, werror"),
    # faults
    ({"faults": {"image": "disk"}}, "faults", "must be an array of tables ([[faults]]) (got a table)"),
    ({"faults": [{}]}, "faults.0.image", "required key is missing"),
    ({"faults": [{"image": "nope"}]}, "faults.0.image", "unknown image 'nope'; defined images: disk, tgt"),
    ({"faults": [{"image": "disk", "type": "evil"}]}, "faults.0.type",
     "Input should be 'error', 'flakey', 'dust' or 'delay' (got 'evil')"),
    ({"faults": [{"image": "disk", "operation": "trim"}]}, "faults.0.operation",
     "must be 'read', 'write', 'write-zeroes', 'flush' or 'any', or a non-empty array of those"),
    ({"faults": [{"image": "disk", "operation": []}]}, "faults.0.operation", "non-empty array"),
    ({"faults": [{"image": "disk", "errno": "ENOENT"}]}, "faults.0.errno",
     "Input should be 'EIO', 'ENOSPC', 'EPERM', 'EACCES', 'EINVAL', 'EROFS', 'ETIMEDOUT', 'ENOMEDIUM', "
     "'EDQUOT' or 'ECANCELED' (got 'ENOENT')"),
    ({"faults": [{"image": "disk", "offset": "1GiB"}]}, "faults.0.offset",
     "fault range starts at or beyond the end of the image (offset 1073741824, image size 1073741824)"),
    ({"faults": [{"image": "disk", "offset": "1M", "length": "1GiB"}]}, "faults.0.length",
     "fault range ends beyond the end of the image"),
    ({"faults": [{"image": "disk", "length": 0}]}, "faults.0.length", "must be greater than 0"),
    ({"faults": [{"image": "disk", "count": 0}]}, "faults.0.count", "must be an integer >= 1 or 'once'"),
    ({"faults": [{"image": "disk", "count": "twice"}]}, "faults.0.count", "must be an integer >= 1 or 'once'"),
    ({"faults": [{"image": "disk", "skip": -1}]}, "faults.0.skip", "Input should be greater than or equal to 0"),
    ({"faults": [{"image": "disk", "start": "5s", "end": "5s"}]}, "faults.0.end",
     "must be after start (5s), got 5s"),
    ({"faults": [{"image": "disk", "probability": 0}]}, "faults.0.probability",
     "Input should be greater than 0 (got 0)"),
    ({"faults": [{"image": "disk", "probability": 1.5}]}, "faults.0.probability",
     "Input should be less than or equal to 1 (got 1.5)"),
    ({"faults": [{"image": "disk", "probability": float("nan")}]}, "faults.0.probability",
     "Input should be a finite number"),
    ({"faults": [{"image": "disk", "up": "1s"}]}, "faults.0.up",
     f"not allowed for a fault of type 'error' (only for type 'flakey'); allowed keys: {FAULT_KEYS}"),
    ({"faults": [{"image": "disk", "type": "delay", "drop-writes": True, "delay": 1}]}, "faults.0.drop-writes",
     f"not allowed for a fault of type 'delay' (only for type 'flakey'); allowed keys: {FAULT_KEYS}, delay"),
    ({"faults": [{"image": "disk", "type": "flakey", "blocks": [1], "up": 1, "down": 1}]}, "faults.0.blocks",
     "not allowed for a fault of type 'flakey' (only for type 'dust')"),
    ({"faults": [{"image": "disk", "bogus": 1}]}, "faults.0.bogus", f"unknown key; allowed keys: {FAULT_KEYS}"),
    ({"faults": [{"image": "disk", "type": "flakey", "up": "1s", "down": 0}]}, "faults.0.down",
     "must be greater than 0"),
    ({"faults": [{"image": "disk", "type": "delay"}]}, "faults.0.delay", "required for a fault of type 'delay'"),
    ({"faults": [{"image": "disk", "type": "dust"}]}, "faults.0.blocks", "required for a fault of type 'dust'"),
    ({"faults": [{"image": "disk", "type": "dust", "blocks": [-1]}]}, "faults.0.blocks.0",
     "Input should be greater than or equal to 0"),
    ({"faults": [{"image": "disk", "type": "dust", "blocks": [0, 262144], "block-size": "4K"}]},
     "faults.0.blocks", "block(s) 262144 beyond the end of image 'disk' (262144 blocks of 4KiB)"),
    ({"faults": [{"image": "disk", "type": "dust", "blocks": [], "block-size": 1000}]},
     "faults.0.block-size", "must be a power of two of at least 512B, got 1000"),
    ({"faults": [{"image": "disk", "type": "flakey", "up": 1, "down": 1, "drop-writes": "yes"}]},
     "faults.0.drop-writes", "Input should be a valid boolean (got 'yes')"),
    # workloads
    ({"workloads.w": {}}, "workloads.w.drive", "required key is missing"),
    ({"workloads.w.drive": "vdz"}, "workloads.w.drive", "unknown drive 'vdz'; defined drives: vda"),
    ({"workloads.w": {"drive": "vda", "rw": "random"}}, "workloads.w.rw",
     "Input should be 'read', 'write', 'randread', 'randwrite', 'rw' or 'randrw' (got 'random')"),
    ({"workloads.w": {"drive": "vda", "rwmixread": 101}}, "workloads.w.rwmixread",
     "Input should be less than or equal to 100 (got 101)"),
    ({"workloads.w": {"drive": "vda", "bs": 1000}}, "workloads.w.bs", "must be a multiple of 512 bytes, got 1000"),
    ({"workloads.w": {"drive": "vda", "bs": 0}}, "workloads.w.bs", "must be greater than 0"),
    ({"workloads.w": {"drive": "vda", "iodepth": 0}}, "workloads.w.iodepth",
     "Input should be greater than or equal to 1 (got 0)"),
    ({"workloads.w": {"drive": "vda", "rate-iops": 0}}, "workloads.w.rate-iops", "Input should be greater than 0"),
    ({"workloads.w": {"drive": "vda", "think-time": -1}}, "workloads.w.think-time", "must not be negative"),
    ({"workloads.w": {"drive": "vda", "offset": "1023MiB", "size": "2MiB"}}, "workloads.w.size",
     "workload region ends beyond the end of the image (offset 1072693248 + size 2097152 > image size 1073741824)"),
    ({"workloads.w": {"drive": "vda", "offset": "2GiB"}}, "workloads.w.offset",
     "workload region starts at or beyond the end of the image"),
    ({"workloads.w": {"drive": "vda", "size": 512, "bs": 4096}}, "workloads.w.size",
     "the region (512 bytes) is smaller than bs (4096)"),
    ({"workloads.w": {"drive": "vda", "start": 10, "end": 5}}, "workloads.w.end", "must be after start (10s)"),
    ({"workloads.w": {"drive": "vda", "number-ios": 0}}, "workloads.w.number-ios",
     "Input should be greater than or equal to 1"),
    # jobs
    ({"jobs.j": {"device": "vda"}}, "jobs.j.type", "required key is missing; allowed: 'backup', 'commit', 'mirror' or 'stream'"),
    ({"jobs.j": {"type": "copy", "device": "vda"}}, "jobs.j.type",
     "Input should be 'backup', 'commit', 'mirror' or 'stream' (got 'copy')"),
    ({"jobs.j": {"type": "commit", "device": "vda"}}, "jobs.j.top",
     "'disk' has no backing file, so there is nothing to commit it into"),
    ({"jobs.j": {"type": "stream"}}, "jobs.j.device", "required key is missing"),
    ({"jobs.j": {"type": "stream", "device": "vdz"}}, "jobs.j.device", "unknown drive 'vdz'; defined drives: vda"),
    ({"jobs.j": {"type": "mirror", "device": "vda"}}, "jobs.j.target", "required for a job of type 'mirror'"),
    # (the copy-before-write filter's own options, which 7.2's blockdev-backup does not take)
    ({"jobs.j": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                 "on-cbw-error": "break-snapshot"}}, "jobs.j.on-cbw-error",
     "not an option of QEMU 7.2's blockdev-backup (only of a copy-before-write node made with "
     "blockdev-add): a backup's copy-before-write always fails the guest's write when its copy "
     "fails (break-guest-write) and never times out; allowed keys: type, device,"),
    ({"jobs.j": {"type": "backup", "device": "vda", "target": "tgt", "sync": "full",
                 "cbw-timeout": 5}}, "jobs.j.cbw-timeout", "not an option of QEMU 7.2's blockdev-backup"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt", "on-cbw-error": "x"}},
     "jobs.j.on-cbw-error", "unknown key"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "nope"}}, "jobs.j.target",
     "unknown image 'nope'; defined images: disk, tgt"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "disk"}}, "jobs.j.target",
     "the target must not be the source image 'disk'"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt"}, "images.disk.backing": "tgt"},
     "jobs.j.target", "the target 'tgt' is in the source's backing chain (disk -> tgt)"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt", "sync": "incremental"}}, "jobs.j.sync",
     "Input should be 'full', 'top' or 'none' (got 'incremental')"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt", "granularity": "128M"}},
     "jobs.j.granularity", "must be a power of two from 512B to 64MiB, got 134217728"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt", "on-target-error": "retry"}},
     "jobs.j.on-target-error", "Input should be 'report', 'ignore', 'stop', 'enospc' or 'auto' (got 'retry')"),
    ({"jobs.j": {"type": "mirror", "device": "vda", "target": "tgt", "on-error": "stop"}}, "jobs.j.on-error",
     f"not allowed for a job of type 'mirror' (only for type 'stream' or 'commit'); allowed keys: {JOB_KEYS}, target, "
     "sync, granularity, buf-size, on-source-error, on-target-error"),
    ({"jobs.j": {"type": "stream", "device": "vda", "target": "tgt"}}, "jobs.j.target",
     f"not allowed for a job of type 'stream' (only for type 'mirror' or 'backup'); allowed keys: {JOB_KEYS}, on-error, base"),
    ({"jobs.j": {"type": "stream", "device": "vda", "base": "tgt"}}, "jobs.j.base",
     "'tgt' is not below 'disk' in its backing chain (images below 'disk': none)"),
    ({"jobs.j": {"type": "stream", "device": "vda", "base": "zz"}}, "jobs.j.base",
     "unknown image 'zz'; defined images: disk, tgt"),
    ({"jobs.j": {"type": "stream", "device": "vda", "start": "later"}}, "jobs.j.start", DURATIONS),
    ({"jobs.j": {"type": "stream", "device": "vda", "speed": -1}}, "jobs.j.speed", "must not be negative"),
    # actions
    ({"actions": [{"command": "stop"}]}, "actions.0",
     "needs a trigger: give 'at' (a time) or 'on' (an event name)"),
    ({"actions": [{"at": 1, "on": "STOP", "command": "cont"}]}, "actions.0",
     "give either 'at' (a time) or 'on' (an event name), not both"),
    ({"actions": [{"on": "BLOCK_JOB_EXPLODED", "command": "cont"}]}, "actions.0.on",
     "Input should be 'BLOCK_JOB_ERROR', 'BLOCK_IO_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_COMPLETED', "
     "'BLOCK_JOB_CANCELLED', 'JOB_STATUS_CHANGE', 'STOP', 'RESUME', 'BLOCK_WRITE_THRESHOLD', 'VOLUME_EXTENDED' or 'VOLUME_EXTEND_FAILED' (got 'BLOCK_JOB_EXPLODED')"),
    ({"actions": [{"at": 1, "match": {"device": "j"}, "command": "cont"}]}, "actions.0.match",
     "only allowed with 'on' (an event trigger)"),
    ({"actions": [{"at": 1, "repeat": True, "command": "cont"}]}, "actions.0.repeat",
     "only allowed with 'on' (an event trigger)"),
    ({"actions": [{"at": "soon", "command": "cont"}]}, "actions.0.at", DURATIONS),
    ({"actions": [{"at": 1, "nth": 2, "command": "cont"}]}, "actions.0.nth",
     "only allowed with 'on' (an event trigger)"),
    ({"actions": [{"on": "STOP", "nth": 0, "command": "cont"}]}, "actions.0.nth",
     "Input should be greater than or equal to 1 (got 0)"),
    ({"actions": [{"on": "STOP", "nth": -1, "command": "cont"}]}, "actions.0.nth",
     "Input should be greater than or equal to 1 (got -1)"),
    ({"actions": [{"on": "STOP", "nth": "2", "command": "cont"}]}, "actions.0.nth",
     "Input should be a valid integer (got '2')"),
    ({"actions": [{"at": 1, "after": "STOP", "command": "cont"}]}, "actions.0.after",
     "only allowed with 'on' (an event trigger); for a time after an event use 'on' with 'delay'"),
    ({"actions": [{"on": "STOP", "after": "BLOCK_JOB_EXPLODED", "command": "cont"}]}, "actions.0.after",
     "Input should be 'BLOCK_JOB_ERROR', 'BLOCK_IO_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING', "
     "'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'JOB_STATUS_CHANGE', 'STOP', 'RESUME', "
     "'BLOCK_WRITE_THRESHOLD', 'VOLUME_EXTENDED' or 'VOLUME_EXTEND_FAILED' (got 'BLOCK_JOB_EXPLODED')"),
    ({"actions": [{"on": "STOP", "after-match": {"device": "j"}, "command": "cont"}]},
     "actions.0.after-match", "only allowed with 'after'"),
    ({"actions": [{"at": 1}]}, "actions.0.command", "required key is missing; allowed: 'stop', 'cont', "),
    ({"actions": [{"at": 1, "command": "block-job-explode"}]}, "actions.0.command",
     "'block-set-write-threshold' or 'lv-extend' (got 'block-job-explode')"),
    ({"actions": [{"at": 1, "command": "cont", "when": 2}]}, "actions.0.when",
     "unknown key; allowed keys: at, on, match, delay, repeat, nth, after, after-match, every, command, arguments"),
    ({"actions": [{"at": 1, "command": "block-job-pause"}]}, "actions.0.arguments.device",
     "required key is missing"),
    ({"actions": [{"at": 1, "command": "block-job-finalize", "arguments": {"id": "j", "device": "j"}}]},
     "actions.0.arguments.device", "unknown argument for command 'block-job-finalize'; allowed arguments: id"),
    ({"actions": [{"at": 1, "command": "stop", "arguments": {"now": True}}]}, "actions.0.arguments.now",
     "command 'stop' takes no arguments"),
    ({"actions": [{"at": 1, "command": "block-job-cancel", "arguments": {"device": "j", "force": 1}}]},
     "actions.0.arguments.force", "Input should be a valid boolean (got 1)"),
    ({"actions": [{"at": 1, "command": "block-job-set-speed", "arguments": {"device": "j", "speed": "fast"}}]},
     "actions.0.arguments.speed", "invalid rate 'fast': expected bytes per second"),
    ({"actions": [{"at": 1, "command": "job-cancel", "arguments": {"id": 3}}]}, "actions.0.arguments.id",
     "Input should be a valid string (got 3)"),
    ({"actions": [{"at": 1, "command": "thin-extend", "arguments": {"image": "tgt"}}]}, "actions.0.arguments",
     "give exactly one of 'capacity' (the new capacity) or 'by' (the increase)"),
    ({"actions": [{"at": 1, "command": "thin-extend", "arguments": {"image": "tgt", "by": 1, "capacity": 2}}]},
     "actions.0.arguments", "give exactly one of 'capacity' (the new capacity) or 'by' (the increase)"),
    ({"actions": [{"at": 1, "command": "thin-extend", "arguments": {"image": "zz", "by": "1G"}}]},
     "actions.0.arguments.image", "unknown image 'zz'; defined images: disk, tgt"),
    ({"actions": [{"at": 1, "command": "guest-burst", "arguments": {"drive": "vdz"}}]},
     "actions.0.arguments.drive", "unknown drive 'vdz'; defined drives: vda"),
    ({"actions": [{"at": 1, "command": "guest-burst", "arguments": {"drive": "vda", "bs": 100}}]},
     "actions.0.arguments.bs", "must be a multiple of 512 bytes, got 100"),
    ({"actions": [{"at": 1, "command": "guest-burst", "arguments": {"drive": "vda", "offset": "2G"}}]},
     "actions.0.arguments.offset", "burst region starts at or beyond the end of the image"),
    ({"actions": [{"at": 1, "command": "guest-burst", "arguments": {"drive": "vda", "number-ios": 0}}]},
     "actions.0.arguments.number-ios", "Input should be greater than or equal to 1"),
    ({"actions": [{"at": 1, "command": "block-dirty-bitmap-merge",
                   "arguments": {"node": "disk", "target": "t", "bitmaps": ["a", {"node": "zz", "name": "b"}]}}]},
     "actions.0.arguments.bitmaps.1.node", "unknown node 'zz' (an image or a drive); defined images: disk, tgt"),
    ({"actions": [{"at": 1, "command": "block-dirty-bitmap-merge",
                   "arguments": {"node": "disk", "target": "t"}}]},
     "actions.0.arguments.bitmaps", "required key is missing"),
    ({"actions": [{"at": 1, "command": "block-dirty-bitmap-merge",
                   "arguments": {"node": "disk", "target": "t", "bitmaps": []}}]},
     "actions.0.arguments.bitmaps", "an empty 'bitmaps' list: QEMU 7.2 dies on it"),
    ({"actions": [5]}, "actions.0", "must be a table (got 5)"),
]


@pytest.mark.parametrize("changes, path, words", BAD, ids=[f"{i}:{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(changes, path, words):
    raw = apply_overrides(minimal(), changes)
    problems = problems_of(raw)
    assert [p for p, _ in problems] == [path], problems
    message = problems[0][1]
    assert words in message
    assert "\n" not in message and "Traceback" not in message
    assert "Extra inputs are not permitted" not in message and "Value error" not in message


def test_missing_images():
    assert only_problem({"name": "x"}) == (
        "images", "required key is missing: define at least one image as an [images.NAME] table")


def test_backing_cycle_is_reported_on_each_member():
    problems = problems_of(minimal(images={"a": {"size": 512, "backing": "b"}, "b": {"size": 512, "backing": "a"}},
                                   drives={}))
    assert problems == [("images.a.backing", "backing chain loops back to this image: a -> b -> a"),
                        ("images.b.backing", "backing chain loops back to this image: b -> a -> b")]


def test_stream_base_in_chain():
    raw = minimal(images={"base": {"size": "1G"}, "mid": {"size": "1G", "backing": "base"},
                          "top": {"size": "1G", "backing": "mid"}},
                  drives={"vda": {"image": "top"}},
                  jobs={"a": {"type": "stream", "device": "vda", "base": "base"},
                        "b": {"type": "stream", "device": "vda", "base": "mid"},
                        "c": {"type": "stream", "device": "vda", "base": "top"}})
    assert problems_of(raw) == [("jobs.c.base", "'top' is not below 'top' in its backing chain "
                                                "(images below 'top': mid -> base)")]


def test_key_paths_quote_odd_names():
    raw = {"images": {"my.disk": {"size": 100}}}
    assert only_problem(raw)[0] == 'images."my.disk".size'


def test_names_must_be_strings():
    assert only_problem({"images": {"a": {"size": 512}, 1: {"size": 512}}})[0] == "images.1"


# -- overrides ------------------------------------------------------------------------

def test_apply_overrides_parses_toml_values():
    raw = {"images": {"a": {"size": "1M"}}, "faults": [{"image": "a"}]}
    out = apply_overrides(raw, {"faults.0.probability": "0.5", "seed": "7", "jobs.j0.auto-finalize": "false",
                                "faults.0.operation": '["read", "write"]', "drives.v.werror": "stop",
                                "duration": "10s", "description": "", "name": '"quoted"',
                                "max-events": 100, "images.a.data": [{"offset": 0, "length": 512}]})
    assert out["faults"][0]["probability"] == 0.5
    assert out["seed"] == 7
    assert out["jobs"] == {"j0": {"auto-finalize": False}}  # missing tables are created
    assert out["faults"][0]["operation"] == ["read", "write"]
    assert out["drives"]["v"]["werror"] == "stop"  # not TOML: kept as a string
    assert (out["duration"], out["description"], out["name"]) == ("10s", "", "quoted")
    assert out["max-events"] == 100 and out["images"]["a"]["data"] == [{"offset": 0, "length": 512}]
    assert raw == {"images": {"a": {"size": "1M"}}, "faults": [{"image": "a"}]}  # input untouched


def test_apply_overrides_appends_and_quotes():
    out = apply_overrides({"faults": [{"image": "a"}]},
                          {"faults.1.image": "b", "faults.1.errno": "EPERM", 'images."x.y".size': "4K"})
    assert out["faults"][1] == {"image": "b", "errno": "EPERM"}
    assert out["images"] == {"x.y": {"size": "4K"}}


def test_apply_overrides_newline_stays_a_string():
    assert apply_overrides({}, {"description": "1\nseed = 5"}) == {"description": "1\nseed = 5"}


def test_apply_overrides_errors():
    with pytest.raises(ScenarioError) as info:
        apply_overrides({"faults": [{"image": "a"}], "duration": "5s"},
                        {"faults.x.image": "b", "faults.3.image": "b", "duration.unit": "s",
                         "a..b": 1, "": 2}, source="--set")
    assert info.value.source == "--set"
    assert info.value.problems == [
        ("faults.x.image", "'faults' is an array: expected an index (0 to 1), got 'x'"),
        ("faults.3.image", "index 3 is out of range: 'faults' has 1 entry (use 1 to append one)"),
        ("duration.unit", "cannot set a key inside 'duration', which is '5s', not a table"),
        ("a..b", "invalid key path 'a..b': expected dotted keys such as jobs.job0.speed or faults.0.probability"),
        ("", "invalid key path '': expected dotted keys such as jobs.job0.speed or faults.0.probability"),
    ]


def test_load_scenario_with_overrides(full):
    s = load_scenario(full, {"jobs.job0.on-target-error": "report", "faults.0.probability": "0.25",
                             "seed": "3", "duration": "10s"})
    assert s.jobs["job0"].on_target_error == "report"
    assert (s.faults[0].probability, s.seed, s.duration) == (0.25, 3, 10 * S)
    with pytest.raises(ScenarioError) as info:
        load_scenario(full, {"jobs.job0.on-target-error": "explode"})
    assert str(info.value) == (f"{full}: jobs.job0.on-target-error: Input should be 'report', 'ignore', "
                               "'stop', 'enospc' or 'auto' (got 'explode')")
    with pytest.raises(ScenarioError, match=rf"^{full}: faults.9.image: index 9 is out of range"):
        load_scenario(full, {"faults.9.image": "src"})


def test_override_can_set_manual_start(full):
    s = load_scenario(full, {"jobs.job0.start": "manual"})
    assert s.jobs["job0"].start is None


# -- JSON schema ----------------------------------------------------------------------

def test_json_schema():
    schema = scenario_json_schema()
    json.dumps(schema)
    assert schema["title"] == "blocksim scenario"
    assert schema["required"] == ["images"]
    assert "sample-interval" in schema["properties"] and "max-events" in schema["properties"]
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    assert "cluster-size" in defs["Image"]["properties"]
    assert defs["Image"]["properties"]["latency"]["default"] == "100us"
    assert set(defs["MirrorJob"]["properties"]) >= {"on-target-error", "buf-size", "target"}
    assert "drop-writes" in defs["FlakeyFault"]["properties"]
    assert "number-ios" in defs["GuestBurstArguments"]["properties"]
    size = defs["Image"]["properties"]["size"]
    assert {"type": "integer", "minimum": 0} in size["anyOf"]
    assert "rerror" in defs["Drive"]["properties"]
    assert "source" not in schema["properties"]


# -- guest-burst at run time -----------------------------------------------------------

def test_burst_workload_spec(full):
    s = load_scenario(full)
    spec = burst_workload_spec(s, s.actions[3].arguments)
    assert isinstance(spec, Workload)
    assert (spec.drive, spec.bs, spec.number_ios, spec.offset, spec.size) == ("vda", 64 * KiB, 10, 512 * MiB,
                                                                              512 * MiB)
    spec = burst_workload_spec(s, {"drive": "vda", "bs": "8K", "rw": "read"})
    assert (spec.bs, spec.rw, spec.number_ios, spec.offset, spec.size) == (8192, "read", 1, 0, GiB)


@pytest.mark.parametrize("arguments, error_class, words", [
    ({"drive": "vdz"}, "DeviceNotFound", "Drive 'vdz' not found"),
    ({}, "GenericError", "drive: required key is missing"),
    ({"drive": "vda", "bs": 100}, "GenericError", "bs: must be a multiple of 512 bytes"),
    ({"drive": "vda", "zz": 1}, "GenericError", "unknown argument for command 'guest-burst'"),
    ({"drive": "vda", "offset": "1G"}, "GenericError", "is not inside drive 'vda'"),
])
def test_burst_workload_spec_refusals(full, arguments, error_class, words):
    s = load_scenario(full)
    with pytest.raises(CommandError) as info:
        burst_workload_spec(s, arguments)
    assert info.value.error_class == error_class
    assert words in info.value.desc


def test_copy_is_equal(full):
    s = load_scenario(full)
    assert copy.deepcopy(s) == s


def test_actions_nth_after_and_after_match_are_read_and_round_trip():
    s = load_scenario(minimal(actions=[
        {"on": "BLOCK_JOB_ERROR", "match": {"action": "stop"}, "nth": 2, "command": "block-job-cancel",
         "arguments": {"device": "j", "force": True}},
        {"on": "BLOCK_JOB_READY", "after": "JOB_STATUS_CHANGE", "after-match": {"status": "running"},
         "nth": 1, "repeat": True, "command": "block-job-complete", "arguments": {"device": "j"}},
        {"on": "BLOCK_JOB_ERROR", "command": "cont"}]))
    a = s.actions
    assert (a[0].nth, a[0].after, a[0].after_match) == (2, None, {})
    assert (a[1].nth, a[1].after, a[1].after_match, a[1].repeat) == (
        1, "JOB_STATUS_CHANGE", {"status": "running"}, True)
    assert (a[2].nth, a[2].after, a[2].after_match) == (None, None, {})
    d = s.to_dict()
    assert d["actions"][1]["after-match"] == {"status": "running"}
    assert d["actions"][0]["nth"] == 2
    assert load_scenario(d).to_dict() == d
