"""The orchestrator dies while a Claude Code agent works: `maos resume` continues that
agent's session (`--resume`) instead of starting the task over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from maos.modelserver import parse_script, running_model_server

SCRIPT = """
rules:
  - name: continued
    match: {last_user: 'MAOS restarted'}
    reply: {text: "continued where I left off"}
  - name: hang
    match: {tool_result: true}
    reply: {text: "never sent", delay_s: 120}
  - name: write
    match: {last_user: 'write the notes'}
    reply:
      tool_calls:
        - name: Write
          input: {file_path: notes.txt, content: "first half\\n"}
"""


async def maos(*args: str, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "maos", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.claude
async def test_resume_continues_the_agents_session(cli: Path, tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "name: notes\ntasks:\n  - id: notes\n    prompt: write the notes\n    permission_mode: acceptEdits\n"
    )
    async with running_model_server(parse_script(SCRIPT)) as url, httpx.AsyncClient(base_url=url) as client:
        env = {**os.environ, "MAOS_ANTHROPIC_BASE_URL": url}
        first = await maos("run", "plan.yaml", "--lease-s", "2", "--json", cwd=tmp_path, env=env)
        async with asyncio.timeout(60):
            while not [
                r for r in (await client.get("/requests")).json()["requests"] if r["rule_name"] == "hang"
            ]:
                await asyncio.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        await first.communicate()
        runs = await maos("runs", "--json", cwd=tmp_path, env=env)
        run_id = json.loads((await runs.communicate())[0])[0]["run_id"]
        second = await maos("resume", run_id, "--lease-s", "2", "--json", cwd=tmp_path, env=env)
        out, err = await asyncio.wait_for(second.communicate(), 90)
        requests = (await client.get("/requests")).json()["requests"]
    assert second.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["counts"] == {"succeeded": 1}
    by_rule = {r["rule_name"]: r for r in requests}
    # the same session, with its history: the resumed request is not at turn 1
    assert by_rule["continued"]["session"] == by_rule["write"]["session"]
    assert by_rule["continued"]["turn"] >= 2
    assert (tmp_path / "notes.txt").read_text() == "first half\n"
