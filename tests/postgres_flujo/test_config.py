"""db.url and db.password_file: what the configuration accepts, refuses, and never echoes."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import _overrides as cli_overrides
from exporter.cli import _parser as build_parser
from exporter.config import ConfigError, load_config
from exporter.config_checks import db_path_problems


def load(tmp_path: Path, text: str, **overrides: object) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env={}, overrides=overrides or None, checks=(db_path_problems,))


def test_a_postgres_url_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    config = load(tmp_path, f"db: {{url: 'postgresql://exporter@db:5432/flujo', password_file: {secret}}}\n")
    assert config.db.url == "postgresql://exporter@db:5432/flujo"  # type: ignore[attr-defined]
    assert config.db.path is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("db: {url: 'mysql://u:hunter2@db/flujo'}\n", "must be a postgresql:// URL, got 'mysql://db/flujo'"),
        ("db: {url: 'postgresql://db/f', path: /var/lib/f.db}\n", "not both"),
        ("db: {path: /var/lib/f.db, password_file: /etc/hostname}\n", "db.password_file is for db.url"),
        (
            "db: {url: 'postgresql://db/f'}\njobs: {cleanup: {enabled: true, dry_run: false}}\n",
            "jobs.postgres.url: required by jobs.cleanup on db.url (Postgres)",
        ),
    ],
)
def test_refused_without_echoing_a_password(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    assert message in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_db_flag_with_a_url_sets_db_url(tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "--db", "postgresql://exporter@db:5432/flujo"])
    config = load(tmp_path, "{}\n", **cli_overrides(args))
    assert config.db.url == "postgresql://exporter@db:5432/flujo"  # type: ignore[attr-defined]
    args = build_parser().parse_args(["run", "--db", "/var/lib/flujo/flujo_ops.db"])
    assert cli_overrides(args) == {"db": {"path": "/var/lib/flujo/flujo_ops.db"}}
