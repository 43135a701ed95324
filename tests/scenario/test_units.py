import pytest

from blocksim.scenario.units import format_duration, format_size, ns_to_seconds, parse_duration, parse_rate, parse_size

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize("text, expected", [
    (0, 0),
    (4096, 4096),
    (4096.0, 4096),
    ("512", 512),
    ("4KiB", 4 * KiB),
    ("4K", 4 * KiB),
    ("4k", 4 * KiB),
    ("4KB", 4 * KiB),  # binary too, as documented
    ("64 KiB", 64 * KiB),
    (" 2M ", 2 * MiB),
    ("2MB", 2 * MiB),
    ("1.5GiB", 3 * GiB // 2),
    ("1.5K", 1536),
    ("1TiB", TiB),
    ("1T", TiB),
    ("100B", 100),
    ("100b", 100),
    (".5K", 512),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected
    assert type(parse_size(text)) is int


@pytest.mark.parametrize("bad, words", [
    (-1, "must not be negative"),
    ("-4K", "must not be negative"),
    ("4XB", "expected a whole number of bytes or a number with a unit"),
    ("abc", "KiB"),
    ("", "expected"),
    ("K", "expected"),
    ("4 K B", "expected"),
    ("0.3K", "not a whole number of bytes"),
    ("1.5", "not a whole number of bytes"),
    (1.5, "not a whole number of bytes"),
    (float("inf"), "expected"),
    (float("nan"), "expected"),
    (True, "not a boolean"),
    (False, "not a boolean"),
    (None, "expected"),
    ([4096], "expected"),
])
def test_parse_size_rejects(bad, words):
    with pytest.raises(ValueError) as info:
        parse_size(bad)
    message = str(info.value)
    assert message.startswith("invalid size ")
    assert words in message


def test_parse_size_error_names_units():
    with pytest.raises(ValueError, match=r"B, K/KiB/KB, M/MiB/MB, G/GiB/GB, T/TiB/TB \(binary: 1K = 1024\)"):
        parse_size("12 parsecs")


@pytest.mark.parametrize("text, expected", [
    ("100MiB/s", 100 * MiB), ("100MiB", 100 * MiB), ("1G/s", GiB), (0, 0), (1000, 1000)])
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


def test_parse_rate_rejects():
    with pytest.raises(ValueError, match="^invalid rate 'fast/s': expected bytes per second: a number, "
                                         "or a size such as '100MiB' or '100MiB/s'"):
        parse_rate("fast/s")
    with pytest.raises(ValueError, match="^invalid rate '1 GB/min': expected bytes per second"):
        parse_rate("1 GB/min")
    with pytest.raises(ValueError, match="^invalid rate -5: must not be negative$"):
        parse_rate(-5)
    with pytest.raises(ValueError, match="^invalid rate True: expected bytes per second"):
        parse_rate(True)


@pytest.mark.parametrize("text, expected", [
    (0, 0),
    (2, 2_000_000_000),
    (0.1, 100_000_000),
    (1e-7, 100),
    (1.5, 1_500_000_000),
    ("0.5", 500_000_000),
    ("2", 2_000_000_000),
    ("100ns", 100),
    ("5us", 5_000),
    ("5µs", 5_000),
    ("10ms", 10_000_000),
    ("10 ms", 10_000_000),
    ("2s", 2_000_000_000),
    ("1.5min", 90_000_000_000),
    ("1h", 3_600_000_000_000),
    ("1.4ns", 1),  # rounded to the nearest nanosecond
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected
    assert type(parse_duration(text)) is int


@pytest.mark.parametrize("bad, words", [
    (-1, "must not be negative"),
    (-0.5, "must not be negative"),
    ("-1s", "must not be negative"),
    ("3m", "'m' is ambiguous: write 'min' or 'ms'"),
    ("2 days", "ns, us, ms, s, min or h"),
    ("x", "expected a number of seconds"),
    ("", "expected"),
    (True, "not a boolean"),
    (float("inf"), "expected"),
    (None, "expected"),
    ({"s": 1}, "expected"),
])
def test_parse_duration_rejects(bad, words):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value).startswith("invalid duration ")
    assert words in str(info.value)


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (100, "100B"), (512, "512B"), (1000, "1000B"), (4096, "4KiB"), (1536, "1.5KiB"),
    (64 * KiB, "64KiB"), (3 * GiB // 2, "1.5GiB"), (TiB, "1TiB"), (-4096, "-4KiB"),
    (TiB + 1, "1TiB"),  # rounded for humans
])
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n", [0, 1, 512, 4096, 1536, 65536, 3 * GiB // 2, 5 * TiB, 123 * MiB])
def test_format_size_reads_back(n):
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (100, "100ns"), (1500, "1.5us"), (5000, "5us"), (10_000_000, "10ms"),
    (1_234_567, "1.235ms"), (2_000_000_000, "2s"), (61_000_000_000, "61s"),
    (90_000_000_000, "1.5min"), (3_600_000_000_000, "1h"), (360_000_000_000_000, "100h"),
    (1_000_000_001, "1s"), (-5000, "-5us"),
])
def test_format_duration(ns, text):
    assert format_duration(ns) == text


@pytest.mark.parametrize("ns", [0, 1, 100, 5000, 100_000, 10_000_000, 2_000_000_000, 61_000_000_000,
                                90_000_000_000, 3_600_000_000_000])
def test_format_duration_reads_back(ns):
    assert parse_duration(format_duration(ns)) == ns


def test_ns_to_seconds():
    assert ns_to_seconds(1_500_000_000) == 1.5
    assert ns_to_seconds(0) == 0.0
    assert isinstance(ns_to_seconds(2_000_000_000), float)


@pytest.mark.parametrize("ns", [1, 123_456_789, 60_000_000_000, 86_400_123_456_789, 999_999_999_999_999])
def test_seconds_float_round_trip_is_exact(ns):
    assert parse_duration(ns_to_seconds(ns)) == ns
