"""The timeline figure: its lanes, title and files."""

import math

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blocksim import load_scenario, run
from blocksim.record.plot import lanes, save_timeline, timeline
from blocksim.record.result import Result

# Mirror + guest workload + thin target, with a one-shot target write fault
# under on-target-error=stop: every lane has something to show.
MIRROR = {
    "name": "mirror-thin",
    "duration": "2s",
    "seed": 5,
    "images": {"src": {"size": "64M", "data": "full"},
               "tgt": {"size": "64M", "capacity": "96M"}},
    "drives": {"vda": {"image": "src"}},
    "workloads": {"guest": {"drive": "vda", "rate-iops": 200}},
    "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "tgt",
                      "on-target-error": "stop"}},
    "faults": [{"image": "tgt", "operation": "write", "count": "once"}],
    "actions": [
        {"on": "BLOCK_JOB_ERROR", "delay": "0.3s", "command": "block-job-resume",
         "arguments": {"device": "job0"}},
        {"on": "BLOCK_JOB_READY", "delay": "0.5s", "command": "block-job-complete",
         "arguments": {"device": "job0"}},
    ],
}
# A quiet mirror: no guest, no fault, no thin image.
QUIET = {
    "name": "quiet",
    "duration": "1s",
    "images": {"src": {"size": "16M", "data": "full"}, "tgt": {"size": "16M"}},
    "drives": {"vda": {"image": "src"}},
    "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "tgt"}},
}


@pytest.fixture(scope="module")
def mirror():
    return run(load_scenario(MIRROR))


def lane_axes(fig, name):
    return next(ax for ax in fig.axes if ax.get_gid() == f"lane:{name}")


def legend_labels(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_mirror_with_guest_and_thin_target_has_every_lane(mirror):
    fig = timeline(mirror)
    assert isinstance(fig, Figure)
    assert isinstance(fig.canvas, FigureCanvasAgg)        # never a window
    assert lanes(fig) == ["vm", "job:job0", "errors", "commands", "iops", "latency", "io-status",
                          "usage"]
    # every lane has a label, and they share the simulated time axis
    axes = [lane_axes(fig, name) for name in lanes(fig)]
    assert all(ax.get_ylabel() for ax in axes)
    assert axes[-1].get_xlabel() == "simulated time (s)"
    assert all(ax.get_shared_x_axes().joined(axes[0], ax) for ax in axes)
    assert "job0" in lane_axes(fig, "job:job0").get_ylabel()


def test_lane_contents(mirror):
    fig = timeline(mirror)
    assert "running" in legend_labels(lane_axes(fig, "vm"))
    job = legend_labels(lane_axes(fig, "job:job0"))
    assert {"running", "paused", "ready", "progress"} <= set(job)
    errors = lane_axes(fig, "errors")
    assert {"stop", "write"} <= set(legend_labels(errors))
    assert [t.get_text() for t in errors.get_yticklabels()] == ["job0 (job)"]
    assert legend_labels(lane_axes(fig, "iops")) == ["vda"]
    assert "ms" in lane_axes(fig, "latency").get_ylabel()
    assert "failed" in legend_labels(lane_axes(fig, "io-status"))
    usage = lane_axes(fig, "usage")
    assert legend_labels(usage) == ["tgt allocated", "tgt capacity"]
    assert "MiB" in usage.get_ylabel()
    assert [line.get_linestyle() for line in usage.get_lines()] == ["-", "--"]


def test_title_names_scenario_profile_and_seed(mirror):
    title = timeline(mirror)._suptitle.get_text()
    assert "mirror-thin" in title and "qemu" in title and "seed 5" in title


def test_lanes_with_nothing_to_show_are_left_out():
    fig = timeline(run(load_scenario(QUIET)))
    assert lanes(fig) == ["vm", "job:job0", "commands"]         # the job's start is a command


def test_rfc_2012_job_lane_from_samples():
    # the 2012 profile emits no JOB_STATUS_CHANGE: the spans come from the samples
    result = run(load_scenario({**QUIET, "profile": "rfc-2012"}))
    assert "JOB_STATUS_CHANGE" not in result.event_names()
    fig = timeline(result)
    assert lanes(fig) == ["vm", "job:job0", "commands"]
    assert legend_labels(lane_axes(fig, "job:job0"))


def test_vm_stops_and_guest_errors():
    result = run(load_scenario({
        "name": "guest-stop", "duration": "1s",
        "images": {"disk": {"size": "16M", "capacity": "4M"}},
        "drives": {"vda": {"image": "disk", "werror": "stop"}},
        "workloads": {"guest": {"drive": "vda", "rw": "write", "bs": "64K",
                                "rate-iops": 400}},
        "actions": [{"at": "0.6s", "command": "thin-extend",
                     "arguments": {"image": "disk", "by": "16M"}},
                    {"at": "0.7s", "command": "cont"}],
    }))
    assert "STOP" in result.event_names() and "BLOCK_IO_ERROR" in result.event_names()
    fig = timeline(result)
    assert lanes(fig) == ["vm", "errors", "commands", "iops", "latency", "io-status", "usage"]
    assert set(legend_labels(lane_axes(fig, "vm"))) == {"running", "io-error"}
    errors = lane_axes(fig, "errors")
    assert [t.get_text() for t in errors.get_yticklabels()] == ["vda (guest)"]
    assert "nospace" in legend_labels(lane_axes(fig, "io-status"))


def test_a_result_without_samples_still_draws():
    result = Result({"name": "empty"}, 0, "qemu", [], [], {}, {"scenario": "empty"})
    fig = timeline(result)
    assert lanes(fig) == []


def test_nan_capacity_means_no_usage_lane():
    series = {"time": [0.0, 1.0], "vm.state": ["running", "running"],
              "image.a.allocated": [0, 10], "image.a.capacity": [math.nan, math.nan]}
    result = Result({"name": "x"}, 1, "qemu", [], [], series, {"scenario": "x"})
    assert lanes(timeline(result)) == ["vm"]


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                           (".pdf", b"%PDF")])
def test_save_timeline(mirror, tmp_path, suffix, magic):
    path = save_timeline(mirror, tmp_path / f"figure{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"figure{suffix}"]


# -- what the figure tells ---------------------------------------------------------------

def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_commands_are_drawn_at_their_time_and_a_refusal_is_named():
    result = run(load_scenario({
        **QUIET, "name": "refused", "duration": "2s",
        "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "tgt", "speed": "1M"}},
        "actions": [{"at": "0.5s", "command": "block-job-complete", "arguments": {"device": "job0"}},
                    {"at": "1s", "command": "block-job-set-speed",
                     "arguments": {"device": "job0", "speed": 0}}]}))
    refusal = next(c for c in result.commands if "error" in c)
    ax = lane_axes(timeline(result), "commands")
    labels = texts(ax)
    assert "blockdev-mirror job0" in labels and "block-job-set-speed job0" in labels
    refused = [t for t in ax.texts if t.get_text().startswith("block-job-complete job0 \u2717")]
    assert len(refused) == 1 and refusal["error"]["desc"][:40] in refused[0].get_text()
    assert refused[0].get_color() == "#c0392b"
    # each at its own time
    at = {t.get_text(): t.xy[0] for t in ax.texts}
    assert at["block-job-set-speed job0"] == pytest.approx(1.0)
    assert refused[0].xy[0] == pytest.approx(0.5)
    assert set(legend_labels(ax)) == {"accepted", "refused"}


def test_a_long_refusal_stays_inside_the_commands_lane():
    # mirror-never-ready-guest-outpaces: QEMU's refusal of block-job-complete
    # half-way along the run is longer than the room to the right of its mark
    result = run(load_scenario("scenarios/mirror-never-ready-guest-outpaces.toml"))
    fig = timeline(result)
    ax = lane_axes(fig, "commands")
    renderer = FigureCanvasAgg(fig).get_renderer()
    lane = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text()]
    refused = [t for t in labels if "\u2717" in t.get_text()]
    assert refused and refused[0].get_text().endswith("\u2026")
    for text in labels:
        box = text.get_window_extent(renderer)
        assert lane.x0 - 1 <= box.x0 and box.x1 <= lane.x1 + 1, text.get_text()

def test_a_controllers_commands_do_not_overwrite_each_other_and_the_loop_is_on_the_usage_lane():
    # thin-guest-disk-outruns-extend: the thin-provisioning controller sends
    # a stream of commands; the storage answers with extends, and the guest's
    # writes cross the write thresholds it sets
    result = run(load_scenario("scenarios/thin-guest-disk-outruns-extend.toml"))
    fig = timeline(result)
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in lane_axes(fig, "commands").texts
             if t.get_text()]
    assert len(boxes) >= 10
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    usage = lane_axes(fig, "usage")
    legend = set(legend_labels(usage))
    assert {"threshold crossed", "extended"} <= legend
    crossed = sum(e["event"] == "BLOCK_WRITE_THRESHOLD" for e in result.events)
    extended = sum(e["event"] == "VOLUME_EXTENDED" for e in result.events)
    drawn = {line.get_label(): len(line.get_xdata()) for line in usage.get_lines()}
    assert drawn["threshold crossed"] == crossed > 0
    assert drawn["extended"] == extended > 0

def test_simultaneous_errors_show_their_count():
    # 8 requests in flight fail on the VM stop's drain: one marker per
    # operation, each labelled with its count
    result = run(load_scenario("scenarios/vm-stop-drains-failing-requests.toml"))
    errors = [e for e in result.events if e["event"] == "BLOCK_IO_ERROR"]
    by_op = {op: sum(e["data"]["operation"] == op for e in errors) for op in ("read", "write")}
    counts = sorted(texts(lane_axes(timeline(result), "errors")))
    assert counts == sorted(f"\u00d7{n}" for n in by_op.values() if n > 1)
    assert sum(by_op.values()) == len(errors) > 2


def test_a_state_too_short_to_see_has_no_legend_entry_but_its_event_is_marked():
    # the mirror is READY for a millisecond before it completes
    result = run(load_scenario("scenarios/mirror-thin-target-enospc.toml"))
    ax = lane_axes(timeline(result), "job:mirror0")
    assert "ready" not in legend_labels(ax)
    assert {"running", "paused"} <= set(legend_labels(ax))
    assert "READY, COMPLETED" in texts(ax)


def test_standby_reads_as_not_progressing():
    from matplotlib.colors import to_rgb

    from blocksim.record.plot import JOB_COLORS, JOB_HATCHES
    ready, standby, paused = (to_rgb(JOB_COLORS[s]) for s in ("ready", "standby", "paused"))
    # warm like paused (red above blue), not a lighter ready
    assert standby[0] > standby[2] and paused[0] > paused[2] and ready[2] > ready[0]
    assert JOB_HATCHES["standby"]


def test_constant_series_stay_off_the_top_edge(mirror):
    fig = timeline(mirror)
    for name in ("iops", "latency"):
        ax = lane_axes(fig, name)
        peak = max(max(v for v in line.get_ydata() if v == v) for line in ax.get_lines())
        assert ax.get_ylim()[1] >= peak * 1.1


def test_the_question_is_the_subtitle():
    result = run(load_scenario("scenarios/mirror-never-ready-guest-outpaces.toml"))
    fig = timeline(result)
    first = lane_axes(fig, lanes(fig)[0])
    assert first.get_title(loc="left").replace("\n", " ") == result.scenario["description"]


def test_a_large_extend_keeps_the_small_capacity_visible():
    result = run(load_scenario({
        "name": "big-extend", "duration": "1s",
        "images": {"disk": {"size": "64G", "capacity": "4M"}},
        "drives": {"vda": {"image": "disk", "werror": "stop"}},
        "workloads": {"guest": {"drive": "vda", "rw": "write", "bs": "64K", "rate-iops": 400}},
        "actions": [{"at": "0.5s", "command": "thin-extend", "arguments": {"image": "disk", "by": "32G"}},
                    {"at": "0.6s", "command": "cont"}]}))
    ax = lane_axes(timeline(result), "usage")
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    capacities = [v for v in ax.get_lines()[1].get_ydata() if v > 0]
    assert bottom < min(capacities) and top > max(capacities)
