"""Evaluation runs end to end on the 48 shared chest radiographs ingested into a node.

The set is biased (see tests/data/README.md): these tests check that the pipeline adds
nothing to the statistics, not how good the demo model is.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from pair.algorithms import service as algorithms
from pair.algorithms.runner import Case, run_inference
from pair.audit.models import AuditEvent
from pair.audit.service import Actor
from pair.cli.main import app as cli_app
from pair.core.errors import Invalid
from pair.core.node import Node, open_node
from pair.evaluation import feedback as fb
from pair.evaluation.evaluate import evaluate_scores
from pair.evaluation.runs import service
from pair.evaluation.runs.cohort import Cohort, parse_cohort
from pair.evaluation.runs.models import EvaluationRun
from pair.evaluation.runs.rows import GROUP_COLUMNS, CaseRow
from pair.evaluation.runs.truth import map_label_csv
from pair.repository.models import Instance, Series
from tests.conftest import free_port
from tests.evaluation.runs.evalrun_data import (
    DEMO_DIR,
    create_demo_run,
    demo_setup,
    ingest_shared_images,
    label_csv,
)

N_BOOT = 200


def _numbers(result: dict[str, Any] | None) -> dict[str, Any]:
    assert result is not None
    return {k: v for k, v in result.items() if k != "created_at"}


def test_cohort_query_parse_and_errors() -> None:
    c = parse_cohort(
        "modality=cr,DX; covid19_positive=yes,No;date=20200101-20201231;"
        "report=rsna-cxr-covid:typical,indeterminate;age_band=18-39"
    )
    assert c == Cohort(
        modality=("CR", "DX"),
        date_from="20200101",
        date_to="20201231",
        covid19_positive=("Yes", "No"),
        age_band=("18-39",),
        report_module="rsna-cxr-covid",
        report_values=("typical", "indeterminate"),
    )
    assert parse_cohort(c.to_query()) == c
    assert parse_cohort("") == Cohort()
    assert parse_cohort("date=-20200101").date_to == "20200101"
    bad = {
        "modality": "is not key=value",
        "sexx=F": "unknown key 'sexx'",
        "sex=F": "sex value 'F' is not allowed; use one of: Female, Male, Not Reported",
        "modality=C1": "not a DICOM modality code",
        "date=2020-01-01": "is not a date YYYYMMDD",
        "date=20201231-20200101": "start 20201231 is after the end 20200101",
        "modality=CR;modality=DX": "modality is given twice",
        "age_band=17-20": "use one of: 0-17, 18-39",
        "report=typical": "use report=MODULE:VALUE",
        "covid19_positive=": "no value given",
    }
    for query, message in bad.items():
        with pytest.raises(Invalid, match=message.replace("(", r"\(")):
            parse_cohort(query)


def test_pipeline_adds_nothing(node: Node, shared_data: Path, tmp_path: Path) -> None:
    data, actor = demo_setup(node, shared_data, tmp_path)
    labels = label_csv(data, tmp_path / "labels.csv")
    # drop two patients from the label file: their series are excluded and counted
    rows = list(csv.reader(labels.open()))
    dropped = {rows[1][0], rows[2][0]}
    with labels.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows[:1] + rows[3:])
    with node.db.session() as s:
        mapped = map_label_csv(s, data.facility_id, labels.read_bytes())
        assert not any(k in json.dumps(mapped) for k in dropped | set(data.labels))  # no originals
        csv_run = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="modality=CR,DX",
            truth="csv",
            labels=mapped,
            options={"n_boot": N_BOOT},
        ).id
        pcr_run = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity@1.0.0",
            cohort="covid19_positive=Yes,No",
            truth="rt-pcr",
            options={"n_boot": N_BOOT},
        ).id
    seen: list[tuple[int, int]] = []
    run = service.execute_run(node, csv_run, progress=lambda d, t: seen.append((d, t)))
    assert run.status == "done" and run.failures == []
    n_dropped = sum(
        1
        for r in csv.DictReader((shared_data / "labels.csv").open())
        if r["patient_key"] in dropped
    )
    assert run.cohort_summary["exclusions"] == {"not in the label file": n_dropped}
    assert run.total == data.n_images - n_dropped and seen[-1] == (run.total, run.total)
    result = service.result_of(run)
    assert result.cohort.n_cases == data.n_images - n_dropped
    assert result.cohort.exclusion_reasons == {"not in the label file": n_dropped}

    # The same scores straight from the runner on the stored files, and the same statistics.
    with node.db.session() as s:
        algo = algorithms.load_algorithm(node, algorithms.get_algorithm(s, "demo-cxr-opacity"))
        files = {
            series_uid: node.settings.storage_dir / path
            for series_uid, path in s.execute(
                select(Series.series_uid, Instance.storage_path).join(
                    Instance, Instance.series_pk == Series.id
                )
            )
        }
    cases = run.cases
    # the stored rows are exactly the typed CaseRow (binary: no class probabilities)
    assert all(set(c) == CaseRow.__required_keys__ | {"score_compare"} for c in cases) or all(
        set(c) == CaseRow.__required_keys__ for c in cases
    )
    direct = {
        r.case_id: r.score
        for r in run_inference(algo, [Case(c["case_id"], [files[c["case_id"]]]) for c in cases])
    }
    assert [c["score"] for c in cases] == [direct[c["case_id"]] for c in cases]
    by_patient = {c["patient"] for c in cases}
    assert len(by_patient) < len(cases)  # several images per patient -> clustered
    groups = {g: np.array([c[g] for c in cases], dtype=object) for g in GROUP_COLUMNS}
    expected = evaluate_scores(
        np.array([c["y"] for c in cases]),
        np.array([c["score"] for c in cases]),
        0.5,
        groups=groups,
        clusters=np.array([c["patient"] for c in cases], dtype=object),
        n_boot=N_BOOT,
        names=("demo-cxr-opacity@1.0.0", "comparator"),
        exclusions={"not in the label file": n_dropped},
    )
    assert _numbers(run.result) == _numbers(json.loads(expected.model_dump_json()))
    assert "cluster" in result.auc.method
    assert {s.variable for s in result.subgroups} == set(GROUP_COLUMNS)

    # RT-PCR truth from the clinical data: the same labels for every patient.
    pcr = service.execute_run(node, pcr_run)
    assert pcr.cohort_summary["included"] == data.n_images
    assert sum(c["y"] for c in pcr.cases) == sum(
        1 for r in csv.DictReader((shared_data / "labels.csv").open()) if r["label"] == "covid"
    )

    # Resume: running a finished run again replays from the inference cache, same numbers.
    again = service.execute_run(node, csv_run)
    assert _numbers(again.result) == _numbers(run.result)
    assert again.cohort_summary["inferences_from_cache"] == again.total

    # Series-level cohort filter
    with node.db.session() as s:
        dx = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="modality=CR",
            truth="rt-pcr",
            options={"n_boot": N_BOOT},
        ).id
    n_cr = sum(
        1 for r in csv.DictReader((shared_data / "labels.csv").open()) if r["modality"] != "DX"
    )
    cr = service.execute_run(node, dx)
    assert cr.cohort_summary["selected"] == n_cr and {c["modality"] for c in cr.cases} == {"CR"}


def test_compare_and_failures(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    node = sqlite_node
    _, actor = demo_setup(node, shared_data, tmp_path)
    # one stored file damaged: that case fails with a reason and is listed, the rest goes on
    with node.db.session() as s:
        inst = s.scalars(select(Instance).order_by(Instance.id)).first()
        assert inst is not None
        victim = node.settings.storage_dir / inst.storage_path
        victim_series = s.get(Series, inst.series_pk)
        assert victim_series is not None
        victim_uid = victim_series.series_uid
        run_id = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            compare="demo-cxr-opacity@1.0.0",
            cohort="",
            truth="rt-pcr",
            options={"n_boot": N_BOOT},
        ).id
    victim.chmod(0o644)
    victim.write_bytes(b"not a dicom file")
    run = service.execute_run(node, run_id)
    assert run.status == "done"
    assert {f["case_id"] for f in run.failures} == {victim_uid}
    assert run.failures[0]["error"] == "unreadable DICOM"
    assert run.cohort_summary["exclusions"] == {"inference failed: unreadable DICOM": 1}
    comparison = service.result_of(run).comparison
    assert comparison is not None and comparison.auc.difference.value == 0


def test_truth_and_create_errors(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    node = sqlite_node
    data, actor = demo_setup(node, shared_data, tmp_path)
    with node.db.session() as s:
        with pytest.raises(Invalid, match="exactly one key column"):
            map_label_csv(s, data.facility_id, b"name,label\nx,1\n")
        with pytest.raises(Invalid, match=r"row 2: patient id not found.*row 3: label 'maybe'"):
            map_label_csv(
                s, data.facility_id, b"patient_id,label\nNOPE,1\nhannover:024e7871,maybe\n"
            )
        with pytest.raises(Invalid, match="Unknown truth source 'pcr'"):
            service.create_run(s, actor, algorithm="demo-cxr-opacity", cohort="", truth="pcr")
        with pytest.raises(Invalid, match="needs a label file"):
            service.create_run(s, actor, algorithm="demo-cxr-opacity", cohort="", truth="csv")
        rad = Actor(None, "rad", data.facility_id, "radiologist", "test")
        with pytest.raises(Exception, match="Only evaluators and admins"):
            service.create_run(s, rad, algorithm="demo-cxr-opacity", cohort="", truth="rt-pcr")
        run_id = service.create_run(
            s, actor, algorithm="demo-cxr-opacity", cohort="", truth="report:rsna-cxr-covid:typical"
        ).id
    with pytest.raises(Invalid, match=r"No case left to evaluate.*no final rsna-cxr-covid report"):
        service.execute_run(node, run_id)
    with node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.status == "failed" and "No case left" in row.error


def test_cli_evaluate(tmp_path: Path, shared_data: Path) -> None:
    data_dir = tmp_path / "node"
    node = open_node(data_dir)
    data = ingest_shared_images(node, shared_data, tmp_path)
    node.close()
    runner = CliRunner()
    assert (
        runner.invoke(
            cli_app, ["algorithm", "add", "--data-dir", str(data_dir), str(DEMO_DIR)]
        ).exit_code
        == 0
    )
    out = tmp_path / "out"
    r = runner.invoke(
        cli_app,
        [
            "evaluate",
            "--data-dir",
            str(data_dir),
            "--algorithm",
            "demo-cxr-opacity@1.0.0",
            "--cohort",
            "modality=CR,DX",
            "--truth",
            "csv",
            "--labels",
            str(label_csv(data, tmp_path / "l.csv")),
            "--out",
            str(out),
            "--n-boot",
            str(N_BOOT),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "48 of 48 series" in r.output and "AUC" in r.output and "youden" in r.output
    assert {p.name for p in out.iterdir()} >= {
        "report.html",
        "result.json",
        "feedback.json",
        "cases.csv",
        "cases.json",
    }
    cases = json.loads((out / "cases.json").read_text())
    assert len(cases) == 48 and {c["truth"] for c in cases} == {"positive", "negative"}
    assert (out / "cases.csv").read_text().count("\n") == 49
    envelope = json.loads((out / "feedback.json").read_text())
    key = fb.load_key(data_dir / "keys" / "feedback.key")
    assert fb.verify_signature(envelope, key)
    assert "hannover" not in (out / "feedback.json").read_text()
    r = runner.invoke(
        cli_app,
        [
            "evaluate",
            "--data-dir",
            str(data_dir),
            "--algorithm",
            "demo-cxr-opacity",
            "--cohort",
            "sex=F",
            "--truth",
            "rt-pcr",
        ],
    )
    assert r.exit_code == 2 and "sex value 'F' is not allowed" in r.output


class _Hub(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hub.received.append({"auth": self.headers["Authorization"], "body": json.loads(body)})
        self.send_response(202)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


def _wait(client: TestClient, run_id: int, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(300):
        body: dict[str, Any] = client.get(f"/api/evaluations/{run_id}", headers=headers).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError("evaluation did not finish")


def test_api(
    node: Node, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pair.web.app import create_app

    data, _ = demo_setup(node, shared_data, tmp_path)
    client = TestClient(create_app(node))
    ev = {"Authorization": f"Bearer {data.evaluator_token}"}
    rad = {"Authorization": f"Bearer {data.radiologist_token}"}
    form = {
        "algorithm": "demo-cxr-opacity",
        "truth": "csv",
        "cohort": "modality=CR,DX",
        "n_boot": str(N_BOOT),
    }
    files = {"labels": ("labels.csv", label_csv(data, tmp_path / "l.csv").read_bytes(), "text/csv")}
    assert client.post("/api/evaluations", data=form, files=files, headers=rad).status_code == 403
    bad = client.post(
        "/api/evaluations", data={**form, "cohort": "modality=CR;foo=1"}, files=files, headers=ev
    )
    assert bad.status_code == 422 and "unknown key 'foo'" in bad.json()["message"]
    r = client.post("/api/evaluations", data=form, files=files, headers=ev)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    body = _wait(client, run_id, ev)
    assert body["status"] == "done", body["error"]
    assert body["done"] == body["total"] == data.n_images
    assert body["result"]["cohort"]["n_cases"] == data.n_images
    assert [x["id"] for x in client.get("/api/evaluations", headers=ev).json()] == [run_id]
    assert client.post(f"/api/evaluations/{run_id}/resume", headers=ev).status_code == 409
    # compared with a report category nobody has written: the run fails and says why
    r = client.post(
        "/api/evaluations",
        data={
            "algorithm": "demo-cxr-opacity",
            "truth": "rt-pcr",
            "n_boot": str(N_BOOT),
            "compare_report": "rsna-cxr-covid:typical",
        },
        headers=ev,
    )
    failed = _wait(client, r.json()["id"], ev)
    assert failed["status"] == "failed"
    assert "no final rsna-cxr-covid report (comparison)" in failed["error"]
    # per-case export: one row per case, outcomes agreeing with the manifest point's counts
    assert client.get(f"/api/evaluations/{failed['id']}/cases", headers=ev).status_code == 409
    assert client.get(f"/api/evaluations/{run_id}/cases", headers=rad).status_code == 403
    bad_format = client.get(f"/api/evaluations/{run_id}/cases?format=xml", headers=ev)
    assert bad_format.status_code == 422 and "csv, json" in bad_format.json()["message"]
    rows = client.get(f"/api/evaluations/{run_id}/cases?format=json", headers=ev).json()
    assert len(rows) == data.n_images
    manifest = body["result"]["operating_points"][0]
    for outcome in ("tp", "fp", "tn", "fn"):
        n = sum(r["outcome"] == outcome.upper() for r in rows)
        assert n == manifest["confusion"][outcome]
    fp = next(r for r in rows if r["outcome"] in ("FP", "FN"))
    assert fp["viewer"] == f"/viewer/{fp['study_uid']}/{fp['case']}"
    assert (fp["prediction"] == "positive") == (fp["score"] >= manifest["threshold"])
    as_csv = client.get(f"/api/evaluations/{run_id}/cases", headers=ev)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.splitlines()
    assert lines[0].startswith("pseudonym,study_uid,case,score,truth,prediction,outcome")
    assert len(lines) == data.n_images + 1
    html = client.get(f"/api/evaluations/{run_id}/report.html", headers=ev)
    assert html.status_code == 200 and "data:image/png;base64" in html.text
    envelope = client.get(f"/api/evaluations/{run_id}/feedback", headers=ev).json()
    assert fb.verify_signature(envelope, fb.load_key(node.settings.data_dir / "keys/feedback.key"))
    fb.validate_envelope(envelope)
    assert client.get(f"/api/evaluations/{run_id}", headers=rad).status_code == 403
    assert client.get("/api/evaluations/999", headers=ev).status_code == 404

    no_hub = client.post(f"/api/evaluations/{run_id}/feedback/submit", json={}, headers=ev)
    assert no_hub.status_code == 422 and "PAIR_FEEDBACK_URL" in no_hub.text
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(node.settings, "feedback_url", f"http://127.0.0.1:{port}/feedback")
        monkeypatch.setattr(node.settings, "feedback_token", SecretStr("hub-token"))
        sent = client.post(
            f"/api/evaluations/{run_id}/feedback/submit", json={"comment": "works"}, headers=ev
        )
        assert sent.status_code == 200 and sent.json()["status_code"] == 202
        assert _Hub.received[-1]["auth"] == "Bearer hub-token"
        assert _Hub.received[-1]["body"]["payload"]["comment"] == "works"
    finally:
        server.shutdown()


def test_demo_registers_the_demo_algorithm(sqlite_node: Node) -> None:
    from pair.demo import register_demo_algorithm

    register_demo_algorithm(sqlite_node)
    register_demo_algorithm(sqlite_node)  # idempotent: an already prepared demo dir
    with sqlite_node.db.session() as s:
        assert [a.ref for a in algorithms.list_algorithms(s)] == ["demo-synth-cxr@1.0.0"]


def test_report_truth_and_report_comparison(
    sqlite_node: Node, shared_data: Path, tmp_path: Path
) -> None:
    from pair.reporting import service as reports
    from pair.repository.models import Patient, Study

    node = sqlite_node
    data, actor = demo_setup(node, shared_data, tmp_path)
    rad = Actor(None, "rad", data.facility_id, "radiologist", "test")
    with node.db.session() as s:
        studies = s.execute(
            select(Study.study_uid, Patient.pseudonym)
            .join(Patient, Study.patient_pk == Patient.id)
            .order_by(Study.id)
        ).all()
        from pair.clinical.service import clinical_of

        for uid, _ in studies[2:]:  # the first two studies get no report
            patient = s.scalar(select(Patient).join(Study).where(Study.study_uid == uid))
            assert patient is not None
            covid = clinical_of(s, patient)["covid19_positive"] == "Yes"
            inputs = (
                {"opacities": "present", "distribution": ["multifocal_bilateral_peripheral"]}
                if covid
                else {"opacities": "absent"}
            )
            report = reports.create_draft(s, rad, uid, "rsna-cxr-covid", inputs)
            reports.sign(s, rad, report.id)
        by_report = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="report=rsna-cxr-covid:typical,negative",
            truth="report:rsna-cxr-covid:typical",
            options={"n_boot": N_BOOT},
        ).id
        vs_reader = service.create_run(
            s,
            actor,
            algorithm="demo-cxr-opacity",
            cohort="",
            truth="rt-pcr",
            options={"n_boot": N_BOOT, "compare_report": "rsna-cxr-covid:typical"},
        ).id
        with pytest.raises(Invalid, match="not both"):
            service.create_run(
                s,
                actor,
                algorithm="demo-cxr-opacity",
                compare="demo-cxr-opacity",
                cohort="",
                truth="rt-pcr",
                options={"compare_report": "rsna-cxr-covid:typical"},
            )
    run = service.execute_run(node, by_report)
    assert run.cohort_summary["selected"] == data.n_images - 2  # cohort: studies with a report
    pcr = service.execute_run(node, vs_reader)
    pcr_y = {c["case_id"]: c["y"] for c in pcr.cases}
    assert len(pcr_y) == len(run.cases) and all(pcr_y[c["case_id"]] == c["y"] for c in run.cases)
    assert pcr.cohort_summary["exclusions"] == {"no final rsna-cxr-covid report (comparison)": 2}
    cmp = service.result_of(pcr).comparison
    assert cmp is not None and cmp.name_b == "report category (rsna-cxr-covid:typical)"
    assert cmp.auc.auc_b == 1.0  # the reports were written from the same labels
    assert all(c["score_compare"] == c["y"] for c in pcr.cases)


class _Crash(Exception):
    pass


def test_interrupted_run_resumes(sqlite_node: Node, shared_data: Path, tmp_path: Path) -> None:
    node = sqlite_node
    data, actor = demo_setup(node, shared_data, tmp_path)
    run_id = create_demo_run(node, actor, N_BOOT)

    def crash_after_20(done: int, total: int) -> None:
        if done >= 20:
            raise _Crash("power cut")

    with pytest.raises(_Crash):
        service.execute_run(node, run_id, progress=crash_after_20)
    with node.db.session() as s:
        row = s.get(EvaluationRun, run_id)
        assert row is not None and row.status == "failed" and row.error == "power cut"
    run = service.execute_run(node, run_id)
    assert run.status == "done" and run.error == ""
    assert run.cohort_summary["inferences_from_cache"] >= 20
    assert run.cohort_summary["inferences_from_cache"] < data.n_images
    with node.db.session() as s:
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.object_id == str(run_id))
        ).all()
        assert {"evaluation.create", "evaluation.run"} <= set(actions)


def test_portal_form_to_cohort_query() -> None:
    from starlette.datastructures import FormData

    from pair.evaluation.runs.pages import _cohort_from

    form = FormData(
        [
            ("modality", "CR"),
            ("modality", "DX"),
            ("date_from", "2020-01-01"),
            ("covid19_positive", "Yes"),
            ("report_module", "rsna-cxr-covid"),
            ("report_values", "typical, indeterminate"),
            ("cohort_extra", "age_band=18-39"),
        ]
    )
    assert _cohort_from(form) == (
        "modality=CR,DX;covid19_positive=Yes;age_band=18-39;date=20200101-;"
        "report=rsna-cxr-covid:typical,indeterminate"
    )
    with pytest.raises(Invalid, match="Choose the final report module"):
        _cohort_from(FormData([("report_values", "typical")]))
    with pytest.raises(Invalid, match="age_band is given twice"):
        _cohort_from(FormData([("age_band", "0-17"), ("cohort_extra", "age_band=18-39")]))
