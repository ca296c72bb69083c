"""Add the `imputation` section to published versions that were trained before it existed.

For each reliability_detector and consensus_latency version in the repository whose metadata has no
`imputation`, the training data is generated again from its provenance (`generator:<model>:<size>` and the
seed), checked against the recorded data fingerprint, and each numeric raw field's median over the training
split's normal rows is written, as training does for new versions. Only metadata.json changes (model.onnx and
its sha256 do not); a version trained on a file (not a generator) or whose data no longer matches its
fingerprint is left as it is and reported.

    .venv/bin/python scripts/add_imputation.py [REPO]      # default: the bundled dwcp_inference/models
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from dwcp_inference.metadata import METADATA_FILE, ModelMetadata, normal_medians
from dwcp_inference.training import jobs
from dwcp_inference.training.common import fingerprint, time_split

SHORT = {"reliability_detector": "reliability", "consensus_latency": "consensus"}


def add(version_dir: Path) -> str:
    path = version_dir / METADATA_FILE
    data = json.loads(path.read_text())
    if data.get("imputation"):
        return "already has imputation"
    training = data.get("training", {})
    kind, _, size = str(training.get("data_source", "")).partition(":")[2].partition(":")
    if kind != SHORT[data["name"]] or size not in jobs.SIZES:
        return f"trained on {training.get('data_source')!r}, not a generator: left as it is"
    columns = jobs.generate(kind, int(training.get("seed", 0)), size)
    if fingerprint(columns) != training.get("data_fingerprint"):
        return "the generated data does not match the recorded fingerprint: left as it is"
    y = np.asarray(columns["is_anomaly"]).astype(int)
    tr = time_split(len(y))[0]
    fields = [f["name"] for f in data["raw_fields"] if not f.get("vocabulary") and f["name"] in columns]
    data["imputation"] = normal_medians(columns, fields, np.flatnonzero(y[tr] == 0))
    ModelMetadata.from_dict(data)  # refuses what the server would refuse
    path.write_text(json.dumps(data, indent=1) + "\n")
    return "imputation added: " + ", ".join(f"{k}={v['value']:.4g}" for k, v in data["imputation"].items())


def main(argv: list[str]) -> int:
    repo = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "dwcp_inference" / "models")
    for model in SHORT:
        for vdir in sorted((repo / model).glob(f"*/{METADATA_FILE}")):
            print(f"{model} {vdir.parent.name}: {add(vdir.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
