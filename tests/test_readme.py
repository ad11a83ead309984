"""The README stands alone and says what the code does: checked against the running app."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import TEST_CONFIG, Harness, MakeGateway
from gateway.emulators import EMULATOR_CREDENTIALS, EMULATOR_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under a ``## title`` heading, up to the next one."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def table_row(text: str, starts: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {starts}")]
    assert len(rows) == 1, f"one row starting {starts!r}: {rows}"
    return rows[0]


def test_no_reference_outside_the_repository() -> None:
    for name in ("providers.md", "provider-vectors.json", "shared/"):
        assert name not in README
    # SPEC.md only names the section that lists where the gateway chose otherwise
    assert {line for line in README.splitlines() if "SPEC.md" in line} == {
        "- [Where this differs from SPEC.md](#where-this-differs-from-specmd)",
        "## Where this differs from SPEC.md"}
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):  # relative links
        assert (ROOT / target).exists(), target


async def test_every_route_is_in_the_readme(gw: Harness) -> None:
    app = gw.client.app
    assert app is not None
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if path.startswith("/static") or path.startswith("/_emulator"):
            continue  # the dashboard's files; the emulator routes have their own row
        # {action} may be written as its values: open\\|close\\|reset
        pattern = re.escape(path).replace(r"\{action\}", r"[\w{}\\|]+")
        assert re.search(rf"`({route.method}|GET/POST) {pattern}[ `\[]", README), \
            f"{route.method} {path}"


async def test_what_needs_a_key_says_so(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("api_keys: []", "api_keys: [k-one]"))
    routes = section("HTTP API")
    for method, path, row in (("GET", "/sms/x", "`GET /sms/{id}`"),
                              ("GET", "/_emulator", "`GET/POST /_emulator"),
                              ("POST", "/admin/providers/aliyun/open", "`POST /admin/providers"),
                              ("POST", "/admin/limits/clear", "`POST /admin/limits")):
        needs_key = (await gw.client.request(method, path, json={})).status == 401
        assert needs_key
        assert "needs an API key when auth is on" in table_row(routes, row), row


async def test_reliability_row_for_system_errors_matches_the_gateway(gw: Harness) -> None:
    await gw.mode("aliyun", "fail")
    body = await (await gw.send("notice", params={"name": "a", "time": "b"})).json()
    assert body["attempts"][0]["outcome"] == "unknown"  # on_unknown: stop
    row = table_row(section("Reliability"), "provider answers a system error")
    assert "**unknown**" in row and "5xx" in row and "safe" not in row


def test_standalone_emulator_credentials_are_documented() -> None:
    emulators = section("Emulators")
    for kind in EMULATOR_CREDENTIALS:
        for key, value in {**EMULATOR_CREDENTIALS[kind], **EMULATOR_OPTIONS[kind]}.items():
            assert f"`{key}: {value}`" in emulators, (kind, key)


def test_bench_duration_is_stated_once() -> None:
    duration = r"(about|under|<|~) ?\w+ ?min\w*"
    lines = [line for line in README.splitlines() if "make bench" in line]
    said = {m.group(0) for line in lines for m in re.finditer(duration, line)}
    assert len(said) == 1, said


def test_docker_notes_match_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = re.search(r"urlopen\('http://127\.0\.0\.1:(\d+)/healthz'", dockerfile)
    assert port is not None
    production = section("Running in production")
    assert f"http://127.0.0.1:{port.group(1)}/healthz" in production
    assert f"-p 9000:{port.group(1)}" in production
    assert "logging.file: null" in production
    assert "-v " in production and "/etc/sms-gateway" in production
    assert "/etc/sms-gateway/config.yaml" in dockerfile
