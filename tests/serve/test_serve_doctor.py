"""The doctor report through the API: the same checks and verdicts as `provisiond doctor --json`,
for the operator only."""

from __future__ import annotations

from flask.testing import FlaskClient

from provisiond.config import Config
from provisiond.doctor.run import run_doctor

pytest_plugins = ("serve_fixtures",)


def verdicts(report: dict) -> list[tuple[str, str, str]]:
    return [(r["check"], r["status"], r["subject"]) for r in report["results"]]


def test_doctor_report_through_the_api(client: FlaskClient, operator: dict[str, str], config: Config) -> None:
    assert client.get("/api/v1/doctor").status_code == 401
    reply = client.get("/api/v1/doctor", headers=operator)
    assert reply.status_code == 200
    report = reply.json
    assert verdicts(report) == verdicts(run_doctor(config).json())
    answers = {r["subject"]: r["status"] for r in report["results"] if r["check"] == "answers"}
    assert answers == {"node1": "ok", "node2": "ok", "node3": "ok"}
    assert report["status"] in ("ok", "warn", "fail") and sum(report["counts"].values()) == len(report["results"])
