"""What the NAB loader refuses, through the real CLI on small files of its own: a CSV with no entry in
combined_windows.json, a series not at the detectors' 5-minute cadence, and (in evaluate) a file too short to
judge. Each is one line naming the file, exit 2, instead of a file dropped or misjudged silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dwcp_inference.training import nab
from dwcp_inference.training.data import real
from dwcp_inference.training.data.csv_schema import DataError

START = np.datetime64("2014-02-14T00:00:00")


def _text(t: np.datetime64) -> str:
    return str(t).replace("T", " ")


def _write(folder: Path, name: str, rows: int, minutes: int = 5, seed: int = 0,
           window: tuple[int, int] | None = (450, 480)) -> tuple[str, list]:
    """A CSV of `rows` values `minutes` apart under folder/series, a spike in `window` (rows); its labels entry."""
    rng = np.random.default_rng(seed)
    value = 40 + rng.normal(0, 1, rows)
    ts = START + np.arange(rows) * np.timedelta64(minutes * 60, "s")
    spans = []
    if window and window[1] < rows:
        value[window[0] + 10] += 30
        spans = [[f"{_text(ts[window[0]])}.000000", f"{_text(ts[window[1]])}.000000"]]
    (folder / "series").mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,value"] + [f"{_text(t)},{v:.3f}" for t, v in zip(ts, value)]
    (folder / "series" / name).write_text("\n".join(lines) + "\n")
    return f"series/{name}", spans


def _dataset(folder: Path, files: dict[str, dict], unlisted: tuple[str, ...] = ()) -> Path:
    labels = {}
    for i, (name, kw) in enumerate(files.items()):
        key, spans = _write(folder, name, **{"seed": i, **kw})
        if name not in unlisted:
            labels[key] = spans
    (folder / "combined_windows.json").write_text(json.dumps(labels))
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dwcp_inference.commands.cli", *args], capture_output=True,
                          text=True)


def _one_line(stderr: str) -> str:
    """The error: one line (log lines aside)."""
    lines = [line for line in stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def test_a_csv_without_labels_is_refused_not_skipped(tmp_path):
    data = _dataset(tmp_path / "d", {"a.csv": {"rows": 600}, "b.csv": {"rows": 600}, "c.csv": {"rows": 600}},
                    unlisted=("c.csv",))
    with pytest.raises(DataError, match=r"c\.csv: no entry in .*combined_windows\.json \(1 of 3 CSV files"):
        real.nab_series(data)
    out = _cli("train", "reliability", "--format", "nab", "--data", str(data), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "c.csv: no entry in" in _one_line(out.stderr) and "[] for a series without anomalies" in out.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_series_at_another_cadence_is_refused_by_train_and_evaluate(tmp_path):
    good = _dataset(tmp_path / "good", {"a.csv": {"rows": 600}, "b.csv": {"rows": 600}})
    hourly = _dataset(tmp_path / "hourly", {"h.csv": {"rows": 600, "minutes": 60}})
    out = _cli("train", "reliability", "--format", "nab", "--data", str(hourly), "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    assert "h.csv: rows 60 minutes apart (median), 0% of them 5 minutes apart" in _one_line(out.stderr)

    repo = tmp_path / "repo"
    trained = _cli("train", "reliability", "--format", "nab", "--data", str(good), "--out", str(repo), "--force")
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = _cli("evaluate", "reliability", "--repository", str(repo), "--data", str(hourly), "--format", "nab",
               "--all")
    assert out.returncode == 2
    assert "h.csv: rows 60 minutes apart" in _one_line(out.stderr)

    # A few gaps (a missing row, a late one) are not another cadence: a file at 5 minutes with them loads.
    gaps = _dataset(tmp_path / "gaps", {"g.csv": {"rows": 600}})
    text = (gaps / "series" / "g.csv").read_text().splitlines()
    (gaps / "series" / "g.csv").write_text("\n".join(text[:100] + text[101:300] + text[305:]) + "\n")
    assert len(real.nab_series(gaps)[0].value) == 594

    short = _dataset(tmp_path / "short", {"s.csv": {"rows": nab.START, "window": None},
                                          "t.csv": {"rows": 600, "seed": 5}})
    out = _cli("evaluate", "reliability", "--repository", str(repo), "--data", str(short), "--format", "nab",
               "--all")
    assert out.returncode == 2  # before: the short file was left out of the figures without a word
    assert f"s.csv: {nab.START} rows; the detectors judge a value against a day" in _one_line(out.stderr)


def test_one_file_or_a_bad_timestamp_is_one_line_not_a_traceback(tmp_path):
    single = _dataset(tmp_path / "one", {"a.csv": {"rows": 600}})
    out = _cli("train", "consensus", "--format", "nab", "--data", str(single), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "series/a.csv: the only file; training needs at least two files" in _one_line(out.stderr)

    bad = _dataset(tmp_path / "bad", {"a.csv": {"rows": 600}, "b.csv": {"rows": 600}})
    text = (bad / "series" / "b.csv").read_text().replace("2014-02-14 01:00:00", "14/02/2014 01:00", 1)
    (bad / "series" / "b.csv").write_text(text)
    out = _cli("train", "reliability", "--format", "nab", "--data", str(bad), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "b.csv: not a NAB series (timestamp as YYYY-MM-DD HH:MM:SS" in _one_line(out.stderr)
