"""Algorithm limits are part of the one settings object: ``PAIR_ALGORITHM_*`` variables reach
``node.settings.algorithms`` (and from there the loaded algorithm the runner uses), and a bad
value is refused like any other setting: one line naming the variable, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pair.algorithms import service
from pair.audit.service import Actor
from pair.cli.main import app as cli_app
from pair.core.config import AlgorithmSettings, get_settings
from pair.core.node import open_node
from tests.algorithms.algo_builders import DEMO_DIR

VALUES = {
    "MAX_PACKAGE_BYTES": ("1234", 1234),
    "MAX_UNPACKED_BYTES": ("5678", 5678),
    "MAX_ZIP_MEMBERS": ("3", 3),
    "CASE_TIMEOUT_S": ("2.5", 2.5),
    "LOAD_TIMEOUT_S": ("7", 7.0),
    "MEMORY_LIMIT_MB": ("999", 999),
    "THREADS": ("2", 2),
}


def test_every_variable_reaches_node_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, (raw, _) in VALUES.items():
        monkeypatch.setenv(f"PAIR_ALGORITHM_{name}", raw)
    node = open_node(tmp_path / "node")
    try:
        got = node.settings.algorithms.model_dump()
        assert got == {name.lower(): value for name, (_, value) in VALUES.items()}
    finally:
        node.close()


def test_loaded_algorithm_runs_under_node_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What evaluation runs hand to the runner: the limits of the node that loaded it."""
    monkeypatch.setenv("PAIR_ALGORITHM_CASE_TIMEOUT_S", "9")
    node = open_node(tmp_path / "node")
    try:
        with node.db.session() as s:
            row = service.add_algorithm(s, node, DEMO_DIR, Actor.system("test"))
            loaded = service.load_algorithm(node, row)
        assert loaded.limits == node.settings.algorithms
        assert loaded.limits.case_timeout_s == 9.0
    finally:
        node.close()


def test_defaults_and_lower_case_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings(tmp_path).algorithms == AlgorithmSettings()
    assert AlgorithmSettings().max_package_bytes == 512 * 1024**2
    assert AlgorithmSettings().threads == 1
    monkeypatch.setenv("pair_algorithm_threads", "4")  # names are case-insensitive like PAIR_*
    assert get_settings(tmp_path).algorithms.threads == 4
    # an explicit value (tests, embedding code) wins over the environment
    assert get_settings(tmp_path, algorithms={"threads": 6}).algorithms.threads == 6


@pytest.mark.parametrize(
    ("name", "value"), [("PAIR_ALGORITHM_THREADS", "0"), ("PAIR_ALGORITHM_CASE_TIMEOUT_S", "soon")]
)
def test_invalid_value_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    r = CliRunner().invoke(cli_app, ["algorithm", "list", "--data-dir", str(tmp_path / "n")])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    text = " ".join(r.stderr.split())  # the console wraps one message at its width
    assert text.startswith(f"error: invalid setting {name}: "), r.stderr
    assert text.count("error:") == 1, r.stderr
    assert "Traceback" not in r.output
