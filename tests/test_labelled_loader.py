"""Metric series labelled per row (`--format labelled`: CSVs timestamp,value,is_anomaly, e.g. an operator's own
metrics or the AIOps Challenge KPIs) become the detectors' NAB series by one fixed rule: resampled to 5 minutes,
short gaps filled, long gaps cutting the series into stretches, each labelled run given NAB's window. Checked on
small files of known shape, and through the real CLI (train, then evaluate --all on a file never trained on)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference.training.data import real
from dwcp_inference.training.data.csv_schema import DataError

START = 1_500_000_000 // 300 * 300  # epoch seconds on a 5-minute boundary
WEEK = 7 * 288


def _write(path: Path, minutes: np.ndarray, value: np.ndarray, label: np.ndarray, iso: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = START + minutes * 60
    times = [str(np.datetime64(int(s), "s")) for s in t] if iso else [str(int(s)) for s in t]
    lines = ["timestamp,value,is_anomaly"] + [f"{a},{float(v)!r},{int(b)}" for a, v, b in zip(times, value, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_windows_follow_nabs_labelling_rule():
    flags = np.zeros(1000, dtype=bool)
    flags[[100, 500, 501, 502]] = True  # two anomalies: half a window = floor(0.1 * 1000 / 2) // 2 = 25 rows
    assert real.labelled_windows(flags) == [(75, 125), (476, 526)]
    flags[[10, 990]] = True  # four anomalies: 12 rows each side, clipped at the file's ends
    assert real.labelled_windows(flags) == [(0, 22), (88, 112), (489, 513), (978, 999)]
    near = np.zeros(1000, dtype=bool)
    near[[300, 330]] = True  # windows 275..325 and 305..355 overlap: one window
    assert real.labelled_windows(near) == [(275, 355)]
    long = np.zeros(100, dtype=bool)
    long[20:60] = True  # a run longer than its window: the window holds all of it
    assert real.labelled_windows(long) == [(20, 59)]
    assert real.labelled_windows(np.zeros(50, dtype=bool)) == []


def test_one_minute_rows_resampled_short_gaps_filled_long_gaps_cut(tmp_path):
    # 9 days of 1-minute rows; value = minute index, so a 5-minute mean is the middle minute of its interval.
    minutes = np.arange(9 * 1440)
    keep = np.ones(len(minutes), dtype=bool)
    keep[1000:1015] = False  # 3 intervals missing: filled
    keep[8 * 1440:8 * 1440 + 60] = False  # 12 intervals missing: a cut; the last day is too short to keep
    label = np.zeros(len(minutes), dtype=bool)
    label[3002] = True  # one labelled minute marks its whole interval
    f = _write(tmp_path / "kpi" / "a.csv", minutes[keep], minutes[keep].astype(float), label[keep])
    notes: list[str] = []
    [s] = real.labelled_series(tmp_path / "kpi", note=notes.append)
    n = 8 * 288
    assert s.name == "a.csv" and len(s.value) == n
    assert s.timestamp[0] == np.datetime64(START, "s") and np.all(np.diff(s.timestamp) == np.timedelta64(300, "s"))
    assert s.value[0] == 2.0 and s.value[500] == 2502.0  # means of minutes 0-4 and 2500-2504
    assert np.allclose(s.value[200:203], [1002.0, 1007.0, 1012.0])  # interpolated across the filled gap
    anomaly = 3002 // 5
    half = int(0.1 * n) // 2
    assert s.windows == [(s.timestamp[anomaly - half], s.timestamp[anomaly + half])]
    assert s.in_window.sum() == 2 * half + 1
    assert notes == [f"a.csv: 1 stretch(es) between gaps of more than 3 intervals are shorter than a week and "
                     f"not used ({1440 - 60} rows)"]
    assert f.exists()


def test_stretches_become_parts_times_may_be_iso_and_a_repeated_time_counts_like_any_row(tmp_path):
    intervals = np.concatenate([np.arange(WEEK), WEEK + 10 + np.arange(WEEK)])  # two weeks, a 10-interval cut
    minutes = intervals * 5
    value = np.where(intervals < WEEK, 1.0, 2.0)
    label = np.zeros(len(minutes), dtype=bool)
    # a second row at interval 5's time, marked: it is averaged in and its mark kept (was: dropped, mark and all)
    minutes, value, label = np.append(minutes, minutes[5]), np.append(value, 99.0), np.append(label, True)
    _write(tmp_path / "iso.csv", minutes, value, label, iso=True)
    notes: list[str] = []
    parts = real.labelled_series(tmp_path / "iso.csv", note=notes.append)
    assert [p.name for p in parts] == ["iso.csv part 1", "iso.csv part 2"]
    assert [len(p.value) for p in parts] == [WEEK, WEEK]
    assert parts[0].value[5] == 50.0 and np.all(np.delete(parts[0].value, 5) == 1.0) and np.all(parts[1].value == 2.0)
    assert parts[0].in_window[5] and len(parts[0].windows) == 1 and parts[1].windows == []
    assert notes == []


def test_a_files_parts_stay_on_one_side_of_the_training_split(tmp_path):
    from dwcp_inference.training import nab

    intervals = np.concatenate([np.arange(WEEK), WEEK + 10 + np.arange(WEEK), 2 * WEEK + 20 + np.arange(WEEK)])
    for name in ("a.csv", "b.csv"):
        _write(tmp_path / name, intervals * 5, np.sin(intervals / 10.0), np.zeros(len(intervals)))
    series = real.labelled_series(tmp_path)
    train, held = nab.split_files(series)
    assert [s.name for s in train] == ["a.csv part 1", "a.csv part 2", "a.csv part 3"]
    assert [s.name for s in held] == ["b.csv part 1", "b.csv part 2", "b.csv part 3"]  # was: parts on both sides


def test_the_threshold_that_flags_nothing_flags_nothing_when_served_in_float32():
    from dwcp_inference.training import nab

    scores = [np.array([0.1, 0.2, 0.31381636706925026])]
    n = nab.START + 3  # three judged intervals
    s = real.NabSeries("a", (np.arange(n) * 300).astype("datetime64[s]"), np.zeros(n), np.zeros(n, bool), [])
    t = nab.pick_threshold([s], scores, max_false_alarms=-1.0)  # no threshold meets it: flag nothing
    assert float(np.float32(scores[0].max())) < t  # was max + 1e-9: the served float32 score reached it


def test_bad_files_are_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n1500000000,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: missing columns \['is_anomaly'\].*the header has "
                                        r"\['timestamp', 'value'\]"):
        real.labelled_series(bad)
    bad.write_text("timestamp,value,is_anomaly\n1500000000,1,0\n1500000300,2,2\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 3, column is_anomaly: 2 is outside \[0, 1\]"):
        real.labelled_series(bad)
    bad.write_text("timestamp,value,is_anomaly\n1500000000,1,0\n1500000300,2,0.5\n")  # was: read as 0
    with pytest.raises(DataError, match=r"bad\.csv: row 3, column is_anomaly: 0.5 is not 0 or 1"):
        real.labelled_series(bad)
    bad.write_text("timestamp,value,is_anomaly\n1500000000,1,0\n,2,0\n")  # was: NaT, and a real row lost
    with pytest.raises(DataError, match=r"bad\.csv: row 3, column timestamp: '' is not a time"):
        real.labelled_series(bad)
    with pytest.raises(DataError, match=r"missing\.csv: no such file or folder"):
        real.labelled_series(tmp_path / "missing.csv")
    short = _write(tmp_path / "short" / "s.csv", np.arange(3 * 1440), np.arange(3 * 1440.0), np.zeros(3 * 1440))
    _write(tmp_path / "short" / "t.csv", np.arange(8 * 1440), np.arange(8 * 1440.0), np.zeros(8 * 1440))
    with pytest.raises(DataError, match=r"s\.csv: no stretch of 2016 five-minute intervals \(a week\) .*\(the "
                                        r"longest has 864\)"):  # was: left out with a line, beside t.csv
        real.labelled_series(short.parent, note=lambda _: None)
    hours = np.arange(60 * 24)
    _write(tmp_path / "hourly" / "h.csv", hours * 60, hours * 1.0, np.zeros(len(hours)))
    with pytest.raises(DataError, match=r"h\.csv: rows 60 minutes apart \(median\); the detectors judge 5-minute"):
        real.labelled_series(tmp_path / "hourly")


def test_a_spreadsheets_header_is_read(tmp_path):
    rows = "".join(f"{1500000000 + 300 * i}, {i % 7}, 0\n" for i in range(WEEK))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftimestamp, value, is_anomaly\n" + rows.encode())
    [s] = real.labelled_series(tmp_path / "bom.csv")  # was: "missing columns ['timestamp']"
    assert len(s.value) == WEEK and s.value[3] == 3.0


def _series(path: Path, seed: int, spikes: list[int]) -> None:
    """Nine days at 5 minutes: a noisy daily cycle, a labelled spike at each of `spikes` (intervals)."""
    rng = np.random.default_rng(seed)
    i = np.arange(9 * 288)
    value = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1, len(i))
    label = np.zeros(len(i), dtype=bool)
    for k in spikes:
        value[k:k + 3] += 40
        label[k:k + 3] = True
    _write(path, i * 5, value, label)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", *args], capture_output=True,
                          text=True)


def test_train_and_evaluate_all_read_labelled_series_through_the_cli(tmp_path):
    for k in range(4):
        _series(tmp_path / "train" / f"m{k}.csv", k, [600 + 300 * k, 1500 + 200 * k])
    _series(tmp_path / "new" / "n.csv", 9, [700, 1400, 2100])
    repo = tmp_path / "repo"
    trained = _cli("train", "reliability", "--format", "labelled", "--data", str(tmp_path / "train"), "--out",
                   str(repo), "--force")
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = _cli("evaluate", "reliability", "--repository", str(repo), "--data", str(tmp_path / "new"), "--format",
               "labelled", "--all", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["format"] == "labelled" and result["files"] == ["n.csv"]
    assert {row["windows_found"].split("/")[1] for row in result["rows"].values()} == {"3"}  # its windows, judged
    seen = _cli("evaluate", "reliability", "--repository", str(repo), "--data", str(tmp_path / "train"),
                "--format", "labelled", "--all")
    assert seen.returncode == 2 and "m0.csv" in seen.stderr  # a file it was trained on is refused by name

    for k in range(2):  # every row marked: nothing to learn normal from (was: a traceback from the forest)
        i = np.arange(9 * 288)
        _write(tmp_path / "marked" / f"x{k}.csv", i * 5, np.sin(i / 10.0) + k, np.ones(len(i)))
    marked = _cli("train", "reliability", "--format", "labelled", "--data", str(tmp_path / "marked"), "--out",
                  str(tmp_path / "r2"), "--force")
    assert marked.returncode == 2 and "x0.csv: no judged interval whose last hour is outside every labelled window" \
        in marked.stderr and "Traceback" not in marked.stderr
