"""The ``storage:`` section of config.yaml: defaults, durations in days, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import build_config
from gateway.config import ConfigError, StorageConfig, load_config

ENV = {"ALIYUN_ACCESS_KEY_ID": "a", "ALIYUN_ACCESS_KEY_SECRET": "b", "ALIYUN_SIGN_NAME": "c",
       "HUAWEI_APP_KEY": "d", "HUAWEI_APP_SECRET": "e", "HUAWEI_SENDER": "f"}


def _load(tmp_path: Path, text: str) -> StorageConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env=ENV).storage


def test_the_shipped_defaults(tmp_path: Path) -> None:
    text = build_config().replace("storage: {url: memory}\n", "")
    assert "storage" not in text
    storage = _load(tmp_path, text)
    assert storage.url == "sqlite:///data/sms-gateway.db"
    assert storage.base == tmp_path.resolve()  # relative paths: the config file's folder
    assert (storage.retention, storage.idempotency_ttl) == (30 * 86400, 24 * 3600)
    assert storage.keep_params is False


def test_days_hours_and_keep_params(tmp_path: Path) -> None:
    text = build_config(storage={"url": "memory", "retention": "7d", "idempotency_ttl": "2h",
                                 "keep_params": True})
    storage = _load(tmp_path, text)
    assert (storage.url, storage.retention, storage.idempotency_ttl) == ("memory", 7 * 86400,
                                                                         7200)
    assert storage.keep_params is True


@pytest.mark.parametrize(("key", "value"), [("retention", "soon"), ("keep_params", "maybe"),
                                            ("colour", "red")])
def test_a_bad_value_is_named(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"storage.{key}"):
        _load(tmp_path, build_config(storage={"url": "memory", key: value}))


def test_the_shipped_config_documents_the_section() -> None:
    storage = load_config(Path(__file__).parent.parent / "config.yaml", env=ENV).storage
    assert storage.url == "sqlite:///data/sms-gateway.db" and storage.retention == 30 * 86400
