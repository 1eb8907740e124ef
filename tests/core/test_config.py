"""One settings object: PAIR_* variables, and every default path under the data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from pair.core.config import get_settings


def test_defaults_live_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIR_DATABASE_URL", raising=False)
    monkeypatch.setenv("PAIR_DATA_DIR", str(tmp_path / "from-env"))
    s = get_settings()
    assert s.data_dir == tmp_path / "from-env"
    root = s.data_dir.resolve()
    for path in (s.storage_dir, s.tmp_dir, s.quarantine_dir, s.private_dir):
        assert path.resolve().is_relative_to(root), path
    assert s.resolved_database_url == f"sqlite:///{root / 'pair.db'}"
    assert (s.host, s.port, s.dicom_port, s.ae_title) == ("127.0.0.1", 8000, 11112, "PAIR")
    s.ensure_dirs()
    assert s.site_secret == get_settings().site_secret  # created once, under private/
    assert (s.private_dir / "site-secret.key").is_file()
    assert s.private_dir.stat().st_mode & 0o077 == 0

    # --data-dir wins over PAIR_DATA_DIR; PAIR_DATABASE_URL replaces the embedded SQLite
    monkeypatch.setenv("PAIR_DATABASE_URL", "postgresql+psycopg://pair@db.example/pair")
    monkeypatch.setenv("PAIR_PORT", "9001")
    monkeypatch.setenv("PAIR_AE_TITLE", "SITEPAIR")
    s = get_settings(tmp_path / "from-cli")
    assert s.data_dir == tmp_path / "from-cli"
    assert s.resolved_database_url == "postgresql+psycopg://pair@db.example/pair"
    assert (s.port, s.ae_title) == (9001, "SITEPAIR")
