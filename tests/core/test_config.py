from pathlib import Path

import pytest
from pydantic import ValidationError

from hostplane.core.config import Settings, load_settings, redact_url

STRONG = "a" * 40


def test_placeholder_secret_is_refused_outside_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOSTPLANE_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="placeholder"):
        load_settings(data_dir=tmp_path, environment="production")
    with pytest.raises(ValidationError, match="placeholder"):
        load_settings(data_dir=tmp_path, environment="production", secret_key="change-me")
    assert load_settings(data_dir=tmp_path, environment="development").environment == "development"


def test_environment_beats_the_toml_file_and_flags_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hostplane.toml").write_text(
        f'secret_key = "{STRONG}"\nport = 9000\nlog_level = "debug"\n[jobs]\nmax_attempts = 7\n'
    )
    monkeypatch.setenv("HOSTPLANE_PORT", "9100")
    settings = load_settings(data_dir=tmp_path)
    assert settings.port == 9100
    assert settings.log_level == "debug"
    assert settings.jobs.max_attempts == 7
    assert load_settings(data_dir=tmp_path, port=9200).port == 9200


def test_database_urls_get_the_async_driver(tmp_path: Path) -> None:
    pg = load_settings(data_dir=tmp_path, secret_key=STRONG, database_url="postgresql://u:p@db/hp")
    assert pg.database_url == "postgresql+asyncpg://u:p@db/hp"
    default = load_settings(data_dir=tmp_path, secret_key=STRONG)
    assert default.database_url == f"sqlite+aiosqlite:///{tmp_path / 'hostplane.db'}"
    with pytest.raises(ValidationError, match="database_url"):
        load_settings(data_dir=tmp_path, secret_key=STRONG, database_url="mysql://x/y")


def test_log_format_follows_the_environment(tmp_path: Path) -> None:
    assert (
        load_settings(data_dir=tmp_path, environment="development").effective_log_format
        == "console"
    )
    assert load_settings(data_dir=tmp_path, secret_key=STRONG).effective_log_format == "json"


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    (tmp_path / "hostplane.toml").write_text(f'secret_key = "{STRONG}"\nprot = 1\n')
    with pytest.raises(ValidationError, match="prot"):
        load_settings(data_dir=tmp_path)


def test_redacted_urls_hide_passwords() -> None:
    assert (
        redact_url("postgresql+asyncpg://user:hunter2@db:5432/hp")
        == "postgresql+asyncpg://user:***@db:5432/hp"
    )
    assert redact_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_the_mail_server_is_read_from_hostplane_smtp_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "HOST": "mail.example.com",
        "PORT": "2525",
        "USERNAME": "alerts",
        "PASSWORD": "s3cret",
        "FROM": "alerts@example.com",
        "STARTTLS": "false",
    }.items():
        monkeypatch.setenv(f"HOSTPLANE_SMTP__{name}", value)
    smtp = Settings(environment="development").smtp
    assert (smtp.host, smtp.port, smtp.username) == ("mail.example.com", 2525, "alerts")
    assert smtp.password is not None and smtp.password.get_secret_value() == "s3cret"
    assert smtp.sender == "alerts@example.com" and smtp.starttls is False
