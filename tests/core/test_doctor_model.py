"""`maos doctor` calls the model endpoint agents would use: a dead base URL fails (exit 1,
naming the address and the error), the scripted model server passes. Loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from maos.modelserver import parse_script, running_model_server
from tests.core.test_doctor import free_port

SCRIPT = "rules: []\ndefault:\n  text: pong\n"


async def doctor(cwd: Path, base_url: str) -> tuple[int, dict[str, Any]]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ANTHROPIC_", "MAOS_"))}
    env["ANTHROPIC_BASE_URL"] = base_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "maos", "doctor", "--json", "--redis-url", f"redis://127.0.0.1:{free_port()}",
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None, err
    return proc.returncode, {item["check"]: item for item in json.loads(out)}


async def test_a_dead_base_url_fails_the_model_check(tmp_path: Path) -> None:
    port = free_port()
    code, checks = await doctor(tmp_path, f"http://127.0.0.1:{port}")
    assert code == 1
    assert not checks["model"]["ok"]
    assert f"http://127.0.0.1:{port}/v1/messages: cannot reach it (ConnectError" in checks["model"]["detail"]
    assert checks["store"]["ok"]  # the other checks still ran


async def test_the_scripted_model_server_passes_it_with_one_tiny_request(tmp_path: Path) -> None:
    async with running_model_server(parse_script(SCRIPT)) as url:
        code, checks = await doctor(tmp_path, url)
        async with httpx.AsyncClient(base_url=url) as client:
            requests = (await client.get("/requests")).json()["requests"]
    assert checks["model"]["ok"], checks["model"]
    assert checks["model"]["detail"].startswith(f"{url}/v1/messages answered in ")
    assert code == 0  # an unreachable Redis is reported, not a failure
    assert not checks["redis"]["ok"]
    assert len(requests) == 1
