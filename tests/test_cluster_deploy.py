"""``make cluster`` (bench/cluster.py + bench/balancer.py) and deploy/docker-compose.yml."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from gatewayproc import ROOT, SEND, free_port, run_cli
from replicas import (  # noqa: F401 - the fixtures
    replica_db_fixture,
    replica_server_fixture,
)

from bench.balancer import balancer_app

DEPLOY = ROOT / "deploy"


def test_the_compose_file_runs_two_replicas_on_postgresql_behind_haproxy() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "gateway-a", "gateway-b", "balancer"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["balancer"]["image"].startswith("haproxy:")
    for name in ("gateway-a", "gateway-b"):
        gateway = services[name]
        assert gateway["build"]["dockerfile"] == "Dockerfile"
        assert (DEPLOY / gateway["build"]["context"] / "Dockerfile").exists()
        assert gateway["environment"]["SMS_GATEWAY_DATABASE_URL"].startswith("postgresql://")
        assert "${POSTGRES_PASSWORD" in gateway["environment"]["SMS_GATEWAY_DATABASE_URL"]
        for volume in gateway["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).exists()
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    assert "server gateway-a gateway-a:8080 check" in haproxy
    assert "server gateway-b gateway-b:8080 check" in haproxy
    assert "GET /readyz" in haproxy


def test_the_deploy_config_is_valid_and_stores_in_postgresql() -> None:
    done = run_cli("--config", str(DEPLOY / "config.yaml"), "--check", "--emulate",
                   env={"SMS_GATEWAY_DATABASE_URL": "postgresql://sms:pw@postgres:5432/sms"})
    assert done.returncode == 0, done.stderr
    assert "${SMS_GATEWAY_DATABASE_URL}" in (DEPLOY / "config.yaml").read_text()


async def test_the_balancer_takes_turns_and_skips_a_replica_that_refuses() -> None:
    seen: list[str] = []

    def replica(name: str) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            seen.append(name)
            return web.json_response({"by": name, "body": await request.text()}, status=201)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        return app

    servers = [TestServer(replica("a")), TestServer(replica("b"))]
    for server in servers:
        await server.start_server()
    dead = f"http://127.0.0.1:{free_port()}"
    urls = [str(s.make_url("")) for s in servers] + [dead]
    async with TestClient(TestServer(balancer_app(urls))) as client:
        for _ in range(6):
            response = await client.post("/sms?x=1", data=b"hello")
            assert response.status == 201
            assert (await response.json())["body"] == "hello"
    assert len(seen) == 6 and set(seen) == {"a", "b"}  # the dead one's turns went on
    for server in servers:
        await server.close()


async def test_make_cluster_serves_two_replicas_behind_the_balancer(replica_db: str) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.cluster", "--port", str(port), "--database", replica_db,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert process.stdout is not None
        banner = b""
        while b"Ctrl-C stops it" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), 90)
            assert line, banner.decode()
            banner += line
        replicas = set()
        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                async with session.post(f"http://127.0.0.1:{port}/sms", json=SEND) as response:
                    assert response.status == 200
                    replicas.add(response.headers["X-Replica"])
        assert len(replicas) == 2
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
