"""The model contracts (dwcp_inference/contracts/) are the one declaration every consumer reads: the server's
request side, the fuzzer, training, the importer and the Go client's generated table agree with them; and the
import floors (pyproject.toml [tool.importlinter]) hold."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dwcp_inference import MODEL_KINDS, contracts, metadata
from dwcp_inference.api import inference_pb2 as pb
from dwcp_inference.commands import fuzz
from dwcp_inference.contracts import BANDWIDTH, COMPRESSION, CONSENSUS, CONTRACTS, INTEGER, NUMBER, RELIABILITY
from dwcp_inference.export import importer
from dwcp_inference.features import FeatureError, validate_raw
from dwcp_inference.services import convert
from dwcp_inference.services.settings import bundled_models
from dwcp_inference.training import bandwidth, compression, consensus, reliability
from dwcp_inference.training.data.payloads import CODECS

ROOT = Path(__file__).resolve().parents[1]
GO_TABLE = ROOT / "clients" / "go" / "inference" / "contract_gen.go"
TRAINING = {"bandwidth_predictor": bandwidth, "compression_selector": compression,
            "reliability_detector": reliability, "consensus_latency": consensus}
REQUESTS = {"PredictBandwidth": pb.PredictBandwidthRequest, "SelectCompression": pb.SelectCompressionRequest,
            "DetectAnomaly": pb.DetectAnomalyRequest, "DetectHighLatency": pb.DetectHighLatencyRequest}


def test_every_model_kind_has_one_contract():
    assert tuple(CONTRACTS) == MODEL_KINDS
    for c in CONTRACTS.values():
        assert len({f.name for f in c.fields}) == len(c.fields)
        assert {f.source for f in c.features} <= {f.name for f in c.fields}
        assert set(c.flat_names) <= set(c.numbers) | set(c.labels)


@pytest.mark.parametrize("model", MODEL_KINDS)
def test_each_field_path_leads_to_its_message_field_in_the_api(model):
    """A field's path, followed from its RPC's request message (single and batch), ends at a field of the
    declared message, of a type that can carry the declared kind."""
    c = CONTRACTS[model]
    for f in c.fields:
        for batch in (False, True):
            desc = (getattr(pb, c.rpc + "BatchRequest") if batch else REQUESTS[c.rpc]).DESCRIPTOR
            parts = c.path(f.name, batch).split(".")
            for part in parts[:-1]:
                field = desc.fields_by_name[part.removesuffix("[]")]
                assert field.is_repeated == part.endswith("[]"), (f.name, part)
                desc = field.message_type
            assert desc.name == f.message, (f.name, batch)
            leaf = desc.fields_by_name[parts[-1]]
            kinds = {NUMBER: (leaf.TYPE_DOUBLE,), INTEGER: (leaf.TYPE_INT32, leaf.TYPE_INT64),
                     contracts.CATEGORY: (leaf.TYPE_ENUM, leaf.TYPE_STRING)}[f.kind]
            assert leaf.type in kinds, (f.name, leaf.type)


@pytest.mark.parametrize("model", MODEL_KINDS)
def test_training_reads_its_raw_fields_features_and_targets_from_the_contract(model):
    c, job = CONTRACTS[model], TRAINING[model]
    assert job.NAME == c.name
    assert job.RAW_FIELDS == c.raw_fields()
    assert job.FEATURES == list(c.features)
    assert getattr(job, "TARGETS", []) == list(c.targets)
    assert getattr(job, "WINDOW", 0) == c.window


def test_the_selectors_codec_choices_are_the_contracts():
    assert [(codec.name, codec.level) for codec in CODECS] == list(contracts.CODEC_CHOICES)
    assert [(ch["codec"], ch["level"]) for ch in compression.CHOICES] == list(contracts.CODEC_CHOICES)


@pytest.mark.parametrize("model", MODEL_KINDS)
def test_the_bundled_versions_were_made_with_todays_contract(model):
    """Their metadata carries its own raw fields (a version describes itself); today they equal the contract."""
    meta = metadata.read(bundled_models() / model / "1")
    assert [f.to_dict() for f in meta.raw_fields] == [f.to_dict() for f in CONTRACTS[model].raw_fields()]


def test_a_version_trained_now_carries_the_contracts_raw_fields(trained_repo):
    for model in MODEL_KINDS:
        saved = json.loads((trained_repo / model / "1" / metadata.METADATA_FILE).read_text())["raw_fields"]
        assert saved == [f.to_dict() for f in CONTRACTS[model].raw_fields()], model


def test_the_importer_takes_its_ranges_from_the_contract():
    for kind, model in importer.KINDS.items():
        assert importer.catalog(kind) == {f.name: f for f in CONTRACTS[model].raw_fields() if not f.vocabulary}
    assert importer.BANDWIDTH_TARGETS == BANDWIDTH.decision


def test_the_request_columns_follow_the_contract_in_the_messages_order():
    """Both decoders lay out a sample's numbers in its message's field order (native/src/lib.rs): the columns
    convert.py names are the contract's numeric fields, in that order."""
    for names, c, message in ((convert.NETWORK_FIELDS, BANDWIDTH, pb.NetworkSample),
                              (convert.NODE_FIELDS, RELIABILITY, pb.NodeMetrics),
                              (convert.CONSENSUS_NUMBERS, CONSENSUS, pb.ConsensusSample)):
        in_message_order = [f.name for f in sorted(message.DESCRIPTOR.fields, key=lambda f: f.number)
                            if f.name in c.numbers]
        assert list(names) == in_message_order and set(names) == set(c.numbers)
    assert convert.CONSENSUS_LABELS == CONSENSUS.labels
    assert sorted(convert.LINK_TYPES.values()) == sorted(COMPRESSION.field("link_type").vocabulary)
    assert all(pb.LinkType.Name(k) == f"LINK_TYPE_{v.upper()}" for k, v in convert.LINK_TYPES.items())
    assert convert.PAYLOAD_FIELDS == {f.name: COMPRESSION.path(f.name) for f in COMPRESSION.fields}


def _numeric_fields():
    return [(c.name, f) for c in CONTRACTS.values() for f in c.fields if f.kind != contracts.CATEGORY]


@pytest.mark.parametrize("model, field", _numeric_fields(), ids=lambda v: getattr(v, "name", v))
def test_the_fuzzers_bad_values_lie_exactly_outside_the_contracts_range(model, field):
    """Every value the fuzzer sends for a field is one the server's check refuses, naming that field; the ends
    of the range themselves are accepted (closed ranges)."""
    assert field.min_inclusive and field.max_inclusive  # what features.validate_raw enforces
    raw = [field.raw_field()]
    bad = fuzz.out_of_range(field)
    assert any(v < field.min for v in bad) and any(v > field.max for v in bad)
    for v in bad:
        assert math.isnan(v) or not field.min <= v <= field.max
        with pytest.raises(FeatureError) as e:
            validate_raw(raw, {field.name: [float(v)]})
        assert e.value.field == field.name
    validate_raw(raw, {field.name: [float(field.min), float(field.max)]})


def test_the_fuzzer_mutates_every_numeric_field_of_every_contract():
    generators = fuzz.cases(random.Random(0), 1024, 1024)
    named = {generators[i % len(generators)]()[4] for i in range(4000)}
    for model, f in _numeric_fields():
        path = re.escape(CONTRACTS[model].path(f.name)).replace(r"\[\]", r"\[\d+\]")
        assert any(re.fullmatch(path, words) for words in named), (model, f.name)


def test_the_committed_go_table_is_what_the_generator_makes():
    made = subprocess.run([sys.executable, "-m", "dwcp_inference.contracts", "go"], capture_output=True, text=True,
                          check=True).stdout
    assert GO_TABLE.read_text() == made, "clients/go/inference/contract_gen.go is stale: run make contracts"
    gofmt = shutil.which("gofmt")
    assert gofmt, "gofmt (Go) is needed: the Go client's tests need it too"
    assert subprocess.run([gofmt, "-l", str(GO_TABLE)], capture_output=True, text=True).stdout == ""


def test_the_go_table_states_the_contracts_layouts_and_ranges():
    text = GO_TABLE.read_text()
    for prefix, c in (("BandwidthSample", BANDWIDTH), ("Compression", COMPRESSION), ("Anomaly", RELIABILITY),
                      ("ConsensusSample", CONSENSUS)):
        fields = c.flat_fields
        assert f"const {prefix}Width = {len(fields)}\n" in text
        assert f"var {prefix}Fields = [{prefix}Width]string{{{', '.join(json.dumps(f.name) for f in fields)}}}" in text
    assert "{0.0, 23.0}" in text and "{1.0, 10000000000000.0}" in text and "{0, 3}" in text


# ------------------------------------------------------------------ the floors

def _lint(dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "lint_imports.py"), "--keep", str(dest)],
                          capture_output=True, text=True, timeout=600)


def test_the_import_floors_hold(tmp_path):
    result = _lint(tmp_path / "tree")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_across_the_floors_breaks_them(tmp_path):
    """Export importing training (as export/importer.py did for the raw fields) is a broken contract."""
    tree = tmp_path / "tree"
    _lint(tree)
    (tree / "dwcp_inference" / "export" / "reaching_up.py").write_text(
        "from dwcp_inference.training import bandwidth  # noqa: F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "dwcp_inference.export.reaching_up" in result.stdout, result.stdout
