"""A store it cannot use safely is a clear error naming the path; nothing is recreated."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gateway.store import (
    CorruptStoreError,
    NewMessage,
    StoreConfigError,
    StoreUnavailableError,
    open_store,
    upgrade,
)
from gateway.store.migrate import head
from gateway.store.urls import parse

from .conftest import Opener, PgServer, admin, require

NUMBER = "+8613800138000"


async def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "store.db"
    with pytest.raises(StoreConfigError, match=f"{tmp_path / 'nowhere'} does not exist"):
        await open_store(f"sqlite:///{path}")
    assert not path.parent.exists()


async def test_a_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreConfigError, match="is not a folder"):
        await open_store(f"sqlite:///{tmp_path}/file/store.db")


async def test_a_store_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "store.db").mkdir()
    with pytest.raises(StoreConfigError, match=f"{tmp_path / 'store.db'} is not a regular file"):
        await open_store(f"sqlite:///{tmp_path}/store.db")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write anywhere: a read-only folder cannot be tested as root")
async def test_an_unwritable_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreConfigError, match=f"{folder} is not writable"):
            await open_store(f"sqlite:///{folder}/store.db")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("content", [
    b"name,number\nalice,+8613800138000\n" * 200,  # some other file at that path
    b"SQLite format 3\x00" + b"\xff" * 8000,  # a database whose pages are garbage
])
async def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(CorruptStoreError, match=str(path)):
        await open_store(f"sqlite:///{path}")
    assert path.read_bytes() == content


async def test_a_relative_path_is_read_against_the_base(tmp_path: Path, open_at: Opener) -> None:
    (tmp_path / "data").mkdir()
    store = await open_at("sqlite:///data/gw.db", base=tmp_path)
    await store.records.create(NewMessage("m1", "app", "t", ["+8613800138000"]))
    assert (tmp_path / "data" / "gw.db").is_file()
    assert store.target.path == tmp_path / "data" / "gw.db"


@pytest.mark.parametrize("url", [
    "postgresql://gw:Sup3rSecret@127.0.0.1:1/sms",  # nothing listens on port 1
    "postgresql://gw:Sup3rSecret@127.0.0.1:notaport/sms",
    "postgresql://gw:Sup3r%53ecret@127.0.0.1:1/sms",  # percent-encoded: never shown decoded
    "postgres://gw:Sup3rSecret@h@st/sms",
])
async def test_a_postgresql_error_never_shows_the_password(url: str) -> None:
    with pytest.raises((StoreConfigError, StoreUnavailableError)) as caught:
        await open_store(url)
    message = str(caught.value)
    assert "Sup3r" not in message and "ecret" not in message, message
    assert "127.0.0.1" in message or "sms" in message  # still says which server


def test_unknown_schemes_are_refused() -> None:
    with pytest.raises(StoreConfigError, match="expected memory, sqlite"):
        parse("mysql://root:pw@localhost/sms")
    assert "pw" not in str(parse("postgresql://root:pw@localhost/sms").shown)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway.store", *args]
    return subprocess.run(  # noqa: S603 - our own module, no shell
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_upgrade_command(tmp_path: Path) -> None:
    done = run_cli("upgrade", "--url", "sqlite:///gw.db", "--base", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"schema at revision {head()}" in done.stdout
    assert (tmp_path / "gw.db").is_file()
    again = run_cli("upgrade", "--url", f"sqlite:///{tmp_path}/gw.db", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    missing = run_cli("upgrade", "--url", "sqlite:///missing/gw.db", cwd=tmp_path)
    assert missing.returncode == 2
    assert f"{tmp_path / 'missing'} does not exist" in missing.stderr


def test_the_store_knows_nothing_of_the_web_layer(tmp_path: Path) -> None:
    probe = ("import sys, pkgutil, importlib, gateway.store as s\n"
             "for m in pkgutil.walk_packages(s.__path__, 'gateway.store.'):\n"
             "    if '.migrations' not in m.name and m.name != 'gateway.store.__main__':\n"
             "        importlib.import_module(m.name)\n"
             "print(sorted(n for n in sys.modules if n.split('.')[0] in "
             "('aiohttp', 'aiohttp_jinja2', 'web') or n in ('gateway.app', 'gateway.handlers')))")
    done = subprocess.run(  # noqa: S603 - our own interpreter, no shell
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True)
    assert done.stdout.strip() == "[]"


async def test_a_postgresql_database_that_goes_away_is_unavailable_then_recovers(
        pg_server: PgServer, open_at: Opener) -> None:
    server = require(pg_server)
    name = f"smsgw_gone_{secrets.token_hex(4)}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    await admin(server, f'CREATE DATABASE "{name}"')
    try:
        store = await open_at(url)
        await store.records.create(NewMessage("before", "app", "t", [NUMBER]))
        await admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(StoreUnavailableError):
            await store.records.create(NewMessage("lost", "app", "t", [NUMBER]))
        with pytest.raises(StoreUnavailableError):
            await store.records.get("before")
        await admin(server, f'CREATE DATABASE "{name}"')
        await upgrade(url)
        # The same store object writes again: broken connections were replaced, not kept.
        await store.records.create(NewMessage("after", "app", "t", [NUMBER]))
        assert await store.records.get("after") is not None
        await store.close()
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_check_answers_while_the_store_is_usable(store_url: str, open_at: Opener) -> None:
    store = await open_at(store_url)
    await store.check()


async def test_check_notices_a_sqlite_file_moved_away(tmp_path: Path, open_at: Opener) -> None:
    store = await open_at(f"sqlite:///{tmp_path}/gw.db")
    await store.check()
    (tmp_path / "gw.db").rename(tmp_path / "elsewhere.db")
    with pytest.raises(StoreUnavailableError, match="moved or deleted"):
        await store.check()
