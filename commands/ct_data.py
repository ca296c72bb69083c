"""Continuous training's data: a directory that grows, read with `train`'s own validation (training/data/
csv_schema.py), each file read once.

It accepts our documented CSV schema (docs/data.md) and DWCP's `DataCollector.ExportForTraining` CSV
(`timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms,time_of_day,day_of_week`, epoch seconds, one node's
samples per file: the file's name stands for its link). A file is known by its name, size and modification time
(and its content's sha256, kept for the data fingerprint); a changed file is read again, a refused one is not
retried until it changes.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dwcp_inference.metadata import sha256_file

# A file without its series' id column is one series, named after the file.
SERIES_COLUMN = {"bandwidth_predictor": "link_id", "consensus_latency": "cluster_id"}


@dataclass
class DataFile:
    name: str
    size: int
    mtime_ns: int
    sha256: str
    rows: int = 0
    refused: str = ""  # why `train`'s validation refused it ("" when it was accepted)

    def key(self) -> tuple[str, int, int]:
        return self.name, self.size, self.mtime_ns


class DataFeed:
    """The CSV files of `directory` for `model`; `known` (the controller's state) remembers what was read."""

    def __init__(self, directory: Path, model: str, known: dict[str, dict[str, Any]] | None = None):
        self.directory = Path(directory)
        self.model = model
        self.known: dict[str, DataFile] = {k: DataFile(**v) for k, v in (known or {}).items()}

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(f) for name, f in self.known.items()}

    def scan(self) -> list[DataFile]:
        """Read the files that are new or changed since the last scan: the ones accepted and refused now."""
        from dwcp_inference.training.data.csv_schema import DataError, load_csv

        found = []
        for path in sorted(self.directory.glob("*.csv")):
            try:
                st = path.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            old = self.known.get(path.name)
            if old is not None and old.key() == (path.name, st.st_size, st.st_mtime_ns):
                continue
            entry = DataFile(path.name, st.st_size, st.st_mtime_ns, sha256_file(path))
            try:
                entry.rows = len(next(iter(load_csv(path, self.model).values())))
            except (DataError, OSError, UnicodeDecodeError, csv.Error) as e:
                entry.refused = str(e)
            self.known[path.name] = entry
            found.append(entry)
        return found

    def accepted(self) -> list[DataFile]:
        """The accepted files still present, oldest first (by modification time, then name)."""
        return sorted((f for f in self.known.values() if not f.refused and (self.directory / f.name).exists()),
                      key=lambda f: (f.mtime_ns, f.name))

    def newest(self, max_rows: int) -> list[DataFile]:
        """The newest accepted files holding at most `max_rows` rows together (at least the newest one)."""
        chosen, rows = [], 0
        for f in reversed(self.accepted()):
            if chosen and rows + f.rows > max_rows:
                break
            chosen.append(f)
            rows += f.rows
        return list(reversed(chosen))

    @staticmethod
    def fingerprint(files: list[DataFile]) -> str:
        """sha256 over the files' names and content hashes, in order."""
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}\0{f.sha256}\n".encode())
        return h.hexdigest()

    def merge(self, files: list[DataFile], out: Path) -> int:
        """Write `files` as one CSV in our schema (what `train --data` reads); returns its rows."""
        from dwcp_inference.training.data.csv_schema import SCHEMAS, load_csv

        schema = SCHEMAS[self.model]
        series = SERIES_COLUMN.get(self.model)
        parts = []
        for f in files:
            columns = load_csv(self.directory / f.name, self.model)
            if series and not _has_column(self.directory / f.name, series):
                columns[series] = np.full(len(columns[next(iter(schema))]), Path(f.name).stem)
            parts.append(columns)
        names = list(schema)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = 0
        with open(out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            for columns in parts:
                cells = [_cells(columns[n], schema[n][0]) for n in names]
                for row in zip(*cells):
                    w.writerow(row)
                    rows += 1
        return rows


def _has_column(path: Path, column: str) -> bool:
    with open(path, newline="") as fh:
        return column in (next(csv.reader(fh), None) or [])


def _cells(values: np.ndarray, kind: str) -> list[str]:
    if kind == "time":
        return [str(int(v)) for v in values.astype("datetime64[s]").astype(np.int64)]
    if kind == "number":
        return [repr(float(v)) for v in values]
    if kind == "flag":
        return [str(int(v)) for v in values]
    return [str(v) for v in values]


def dwcp_export(path: Path, timestamps: np.ndarray, bandwidth: np.ndarray, latency: np.ndarray,
                loss: np.ndarray, jitter: np.ndarray) -> None:
    """Write samples exactly as DWCP's DataCollector.ExportForTraining does (Go's %d and %f; time of day and
    day of week in UTC): for tests and for converting DWCP data by hand."""
    ts = np.asarray(timestamps, dtype=np.int64)
    t = ts.astype("datetime64[s]")
    hour = ((t - t.astype("datetime64[D]")).astype(np.int64) // 3600)
    dow = (t.astype("datetime64[D]").astype(np.int64) + 4) % 7  # Go's Weekday: Sunday is 0; 1970-01-01 a Thursday
    with open(path, "w") as fh:
        fh.write("timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms,time_of_day,day_of_week\n")
        for row in zip(ts, bandwidth, latency, loss, jitter, hour, dow):
            fh.write("%d,%f,%f,%f,%f,%d,%d\n" % row)
    os.chmod(path, 0o644)
