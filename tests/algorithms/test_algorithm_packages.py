"""Submission: good packages register, each bad package is refused with its reason, nothing kept."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from onnx import TensorProto
from sqlalchemy import func, select

from pair.algorithms import service
from pair.algorithms.manifest import (
    field_rules,
    manifest_json_schema,
    manifest_json_schema_text,
    semver_key,
)
from pair.algorithms.models import Algorithm
from pair.algorithms.package import PackageRejected
from pair.audit.service import Actor
from pair.core.config import AlgorithmSettings
from pair.core.errors import Conflict, NotFound, PayloadTooLarge
from pair.core.node import Node
from tests.algorithms.algo_builders import (
    DELETE,
    DEMO_DIR,
    custom_op_model,
    manifest,
    mean_model,
    memory_hog_model,
    slow_model,
    write_package,
    zip_folder,
    zip_members,
)

ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor.system("test")
FAST = AlgorithmSettings(case_timeout_s=3, load_timeout_s=30, memory_limit_mb=1536)


def _nothing_stored(node: Node) -> None:
    with node.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Algorithm)) == 0
    algos = node.settings.data_dir / "algorithms"
    assert not algos.exists() or not any(algos.rglob("*"))
    assert not any(node.settings.tmp_dir.iterdir())


def _refused(node: Node, source: Path | bytes, limits: AlgorithmSettings = FAST) -> list[str]:
    with pytest.raises(PackageRejected) as err, node.db.session() as s:
        service.add_algorithm(s, node, source, ACTOR, limits)
    _nothing_stored(node)
    return err.value.problems


def test_published_schema_is_current() -> None:
    published = (ROOT / "docs/algorithm-package.schema.json").read_text()
    assert published == manifest_json_schema_text(), "regenerate: pair algorithm schema > docs/…"


def test_package_written_from_the_published_schema_registers(node: Node, tmp_path: Path) -> None:
    """A vendor who reads only docs/algorithm-package.schema.json can write a valid package."""
    schema = json.loads((ROOT / "docs/algorithm-package.schema.json").read_text())
    vendor_manifest = {
        "format_version": 1,
        "id": "acme-ct-covid",
        "name": "ACME CT COVID",
        "version": "2.1.0",
        "vendor": "ACME",
        "licence": "CC-BY-4.0",
        "description": "d",
        "intended_use": "u",
        "use_case_id": "covid-ct",
        "modality": ["CT"],
        "body_part": "CHEST",
        "model": {"file": "net.onnx", "sha256": "0" * 64},
        "input": {
            "tensor_name": "ct",
            "size": {"height": 32, "width": 32},
            "channels": 3,
            "scaling": {"kind": "window", "center": -600, "width": 1500},
            "normalization": {"kind": "meanstd", "mean": [0.5], "std": [0.5]},
        },
        "output": {
            "kind": "multiclass",
            "tensor_name": "scores",
            "values": "logits",
            "cde_element": "RDE1359",
            "classes": [
                {"name": n, "label": n, "cde_code": f"RDE1359.{i}"}
                for i, n in enumerate(["negative", "typical", "atypical", "indeterminate"])
            ],
            "positive_class": "typical",
        },
    }
    jsonschema.Draft202012Validator(schema).validate(vendor_manifest)
    model = mean_model(in_name="ct", in_shape=["batch", 3, 32, 32], out_name="scores", out_width=4)
    pkg = write_package(tmp_path / "pkg", vendor_manifest, model)
    with node.db.session() as s:
        a = service.add_algorithm(s, node, zip_folder(pkg, prefix="acme/"), ACTOR, FAST)
        assert (a.algorithm_id, a.version) == ("acme-ct-covid", "2.1.0")
    stored = node.settings.data_dir / "algorithms/acme-ct-covid/2.1.0"
    assert sorted(p.name for p in stored.iterdir()) == [
        "README.md",
        "net.onnx",
        "pair-algorithm.yaml",
    ]
    # and the schema rejects what pydantic rejects
    broken = {**vendor_manifest, "version": "2.1"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_demo_package_registers_and_is_idempotent(node: Node) -> None:
    with node.db.session() as s:
        sub = service.submit_algorithm(s, node, DEMO_DIR, ACTOR, FAST)
        assert sub.created and sub.algorithm.stored_path == "algorithms/demo-cxr-opacity/1.0.0"
    with node.db.session() as s:
        again = service.submit_algorithm(s, node, DEMO_DIR, ACTOR, FAST)
        assert not again.created and again.algorithm.id == sub.algorithm.id
        loaded = service.load_algorithm(node, service.get_algorithm(s, "demo-cxr-opacity"))
        assert loaded.model_path.is_file() and "DEMO" in loaded.manifest.name


def test_versions_side_by_side_latest_by_semver(node: Node, tmp_path: Path) -> None:
    for v in ("1.9.0", "1.10.0-rc.1", "1.10.0", "1.2.3"):
        pkg = write_package(tmp_path / v, manifest(version=v), mean_model())
        with node.db.session() as s:
            service.add_algorithm(s, node, pkg, ACTOR, FAST)
    with node.db.session() as s:
        assert service.get_algorithm(s, "test-cxr").version == "1.10.0"
        assert service.get_algorithm(s, "test-cxr", "1.9.0").version == "1.9.0"
        assert [a.version for a in service.list_algorithms(s, "test-cxr")] == [
            "1.10.0",
            "1.10.0-rc.1",
            "1.9.0",
            "1.2.3",
        ]
        with pytest.raises(NotFound, match="known versions"):
            service.get_algorithm(s, "test-cxr", "9.9.9")
    for v in ("1.9.0", "1.10.0"):
        assert (node.settings.data_dir / "algorithms/test-cxr" / v / "model.onnx").is_file()


def test_same_version_different_content_conflicts(node: Node, tmp_path: Path) -> None:
    with node.db.session() as s:
        service.add_algorithm(
            s, node, write_package(tmp_path / "a", manifest(), mean_model()), ACTOR, FAST
        )
    other = write_package(tmp_path / "b", manifest(), mean_model(out_width=2))
    with pytest.raises(Conflict, match="different model file"), node.db.session() as s:
        service.add_algorithm(s, node, other, ACTOR, FAST)
    changed = write_package(tmp_path / "c", manifest(description="changed"), mean_model())
    with pytest.raises(Conflict, match="different manifest"), node.db.session() as s:
        service.add_algorithm(s, node, changed, ACTOR, FAST)


def test_semver_order() -> None:
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "10.0.0",
    ]
    assert sorted(reversed(order), key=semver_key) == order


# --- refusals (SQLite node: the subject is validation, not the database) -----------------


def test_bad_yaml(sqlite_node: Node, tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", manifest(), mean_model())
    (pkg / "pair-algorithm.yaml").write_text("id: x\nname: [unclosed\n")
    (problem,) = _refused(sqlite_node, pkg)
    assert "not valid YAML at line" in problem


def test_schema_errors_are_all_listed_with_paths(sqlite_node: Node, tmp_path: Path) -> None:
    m = manifest(
        **{
            "version": "1.0",
            "name": 2.5,
            "input.size.height": 0,
            "output.positive_class": "maybe",
            "output.classes": [
                {"name": "a", "label": "A", "cde_code": "RID123"},
                {"name": "b", "label": "B"},
            ],
            "licence": DELETE,
            "extra_field": 1,
        }
    )
    problems = _refused(sqlite_node, write_package(tmp_path / "p", m, mean_model()))
    text = "\n".join(problems)
    # sentences, never a regular expression or a pydantic error type
    assert (
        "pair-algorithm.yaml: version: must be a semantic version: three numbers without"
        " leading zeros, such as 1.2.0 (optionally followed by -rc.1 or +build.5); got '1.0'"
    ) in text
    assert "input.size.height: Input should be greater than 0; got 0" in text
    assert (
        "output.classes.0.cde_code: must be a RadElement code such as RDE1360 or one of its"
        " values such as RDE1360.1; got 'RID123'"
    ) in text
    assert "licence: is required but missing" in text
    assert "name: must be text: YAML read 2.5 as a number, so put it in quotes" in text
    assert "extra_field: is not a field of the manifest" in text
    assert "^" not in text and "\\d" not in text and "[missing]" not in text
    assert len(problems) >= 5


def test_every_manifest_pattern_has_a_sentence() -> None:
    """A pattern added to the schema without its sentence would reach vendors as a regex."""

    def patterns(node: object) -> set[str]:
        if isinstance(node, dict):
            found = {str(node["pattern"])} if "pattern" in node else set()
            return found.union(*(patterns(v) for k, v in node.items() if k != "pattern"))
        if isinstance(node, list):
            return set().union(*(patterns(v) for v in node))
        return set()

    assert patterns(manifest_json_schema()) == set(field_rules())


def test_checksum_mismatch(sqlite_node: Node, tmp_path: Path) -> None:
    m = manifest(**{"model.sha256": "ab" * 32})
    (problem,) = _refused(
        sqlite_node, write_package(tmp_path / "p", m, mean_model(), fix_sha=False)
    )
    assert problem.startswith("checksum mismatch: manifest model.sha256 is abab")


def test_custom_operator_domain(sqlite_node: Node, tmp_path: Path) -> None:
    problems = _refused(sqlite_node, write_package(tmp_path / "p", manifest(), custom_op_model()))
    assert any("custom operator domain 'com.example.vendor' in opset_import" in p for p in problems)
    assert any("uses custom operator com.example.vendor::Evil" in p for p in problems)


def test_not_an_onnx_file(sqlite_node: Node, tmp_path: Path) -> None:
    (problem,) = _refused(sqlite_node, write_package(tmp_path / "p", manifest(), b"\x00garbage"))
    assert "model.onnx: not a readable ONNX model" in problem or "ONNX checker" in problem


@pytest.mark.parametrize(
    ("model_kwargs", "expected"),
    [
        (
            {"in_name": "pixels"},
            "input.tensor_name 'image' is not an input of the model; model inputs: ['pixels']",
        ),
        (
            {"in_shape": ["N", 3, 32, 32]},
            "input 'image' has shape [N, 3, 32, 32]; the manifest "
            "(layout NCHW, channels 1, size 32x32) needs "
            "[N, 1, 32, 32]",
        ),
        ({"in_shape": [4, 1, 32, 32]}, "input 'image' has shape [4, 1, 32, 32]"),
        (
            {"in_type": TensorProto.UINT8},
            "input 'image' has element type UINT8, manifest input.dtype is float32",
        ),
        ({"out_name": "score"}, "output.tensor_name 'prob' is not an output of the model"),
        (
            {"out_width": 3},
            "output 'prob' has shape [N, 3]; for kind binary with 2 class(es) "
            "it must be [N, 1 or 2] or [N]",
        ),
    ],
)
def test_io_contract_mismatch(
    sqlite_node: Node, tmp_path: Path, model_kwargs: dict[str, Any], expected: str
) -> None:
    problems = _refused(
        sqlite_node, write_package(tmp_path / "p", manifest(), mean_model(**model_kwargs))
    )
    assert any(expected in p for p in problems), problems


def test_time_limit_in_smoke_inference(sqlite_node: Node, tmp_path: Path) -> None:
    (problem,) = _refused(sqlite_node, write_package(tmp_path / "p", manifest(), slow_model()))
    assert problem == "smoke inference: timeout: smoke inference exceeded the limit of 3 s"


def test_memory_limit_in_smoke_inference(sqlite_node: Node, tmp_path: Path) -> None:
    (problem,) = _refused(
        sqlite_node, write_package(tmp_path / "p", manifest(), memory_hog_model())
    )
    assert problem.startswith("smoke inference: out of memory (limit 1536 MB)")


def test_zip_slip_symlink_and_unexpected_files(sqlite_node: Node, tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", manifest(), mean_model())
    members = {f.name: f.read_bytes() for f in pkg.iterdir()}
    slip = _refused(sqlite_node, zip_members({**members, "../../evil.sh": b"#!/bin/sh"}))
    assert slip == [
        "../../evil.sh: path leaves the package folder (zip-slip); members must be "
        "plain relative names"
    ]
    absolute = _refused(sqlite_node, zip_members({**members, "/etc/cron.d/x": b"x"}))
    assert "zip-slip" in absolute[0]
    link = _refused(sqlite_node, zip_members(members, symlinks={"model2.onnx": "/etc/passwd"}))
    assert link == ["model2.onnx: symbolic links are not allowed in a package zip"]
    extra = _refused(sqlite_node, zip_members({**members, "run.py": b"import os"}))
    assert any(p.startswith("run.py: unexpected file") for p in extra)
    nested = _refused(sqlite_node, zip_members({**members, "sub/x.txt": b"x"}))
    assert "sub-folders are not allowed" in nested[0]
    (pkg / "link.onnx").symlink_to(pkg / "model.onnx")
    assert _refused(sqlite_node, pkg) == ["link.onnx: symbolic links are not allowed in a package"]


def test_oversized_zip_and_zip_bomb(sqlite_node: Node, tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", manifest(), mean_model())
    data = zip_folder(pkg)
    small = AlgorithmSettings(max_package_bytes=len(data) - 1)
    with pytest.raises(PayloadTooLarge, match="limit is"), sqlite_node.db.session() as s:
        service.add_algorithm(s, sqlite_node, data, ACTOR, small)
    bomb = zip_members(
        {**{f.name: f.read_bytes() for f in pkg.iterdir()}, "README.md": b"0" * 5_000_000}
    )
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="unpacked package"), sqlite_node.db.session() as s:
        service.add_algorithm(
            s, sqlite_node, bomb, ACTOR, AlgorithmSettings(max_unpacked_bytes=1_000_000)
        )
    _nothing_stored(sqlite_node)


def test_missing_manifest_and_model(sqlite_node: Node, tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", manifest(), mean_model())
    shutil.copytree(pkg, tmp_path / "q")
    (pkg / "pair-algorithm.yaml").unlink()
    assert "pair-algorithm.yaml is missing" in _refused(sqlite_node, pkg)[0]
    (tmp_path / "q/model.onnx").unlink()
    assert (
        "model file 'model.onnx' named in the manifest is missing"
        in _refused(sqlite_node, tmp_path / "q")[0]
    )


def test_demo_manifest_is_labelled_demo() -> None:
    m = yaml.safe_load((DEMO_DIR / "pair-algorithm.yaml").read_text())
    card = (DEMO_DIR / "README.md").read_text()
    assert "DEMO" in m["name"] and "DEMO" in m["description"] and "DEMO" in m["intended_use"]
    assert card.startswith("# DEMO") and "NOT FOR CLINICAL USE" in card
    assert (DEMO_DIR / "model.onnx").stat().st_size < 300_000


def test_leftover_files_of_an_interrupted_submission(sqlite_node: Node, tmp_path: Path) -> None:
    target = sqlite_node.settings.data_dir / "algorithms/test-cxr/1.0.0"
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(b"partial")
    pkg = write_package(tmp_path / "p", manifest(), mean_model())
    with pytest.raises(Conflict, match="in progress"), sqlite_node.db.session() as s:
        service.add_algorithm(s, sqlite_node, pkg, ACTOR, FAST)
    assert (target / "model.onnx").read_bytes() == b"partial"  # not ours: left alone
    old = time.time() - 3600
    os.utime(target, (old, old))
    with sqlite_node.db.session() as s:
        a = service.add_algorithm(s, sqlite_node, pkg, ACTOR, FAST)
    assert service.sha256_file(target / "model.onnx") == a.sha256


def test_onnx_checks_run_in_the_sandbox() -> None:
    """The vendor's protobuf is parsed in a limited worker: a tiny memory limit makes it fail."""
    from pair.algorithms.sandbox import static_check

    model = DEMO_DIR / "model.onnx"
    assert static_check(model, None, FAST) == []
    (problem,) = static_check(model, None, AlgorithmSettings(memory_limit_mb=40))
    assert problem.startswith("model.onnx: ONNX checks: ")
