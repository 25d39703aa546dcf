"""schemathesis against the server's own ``/openapi.json`` (SPEC-server §7.1): no 5xx (but the
documented read-your-writes 504), and every response matches its documented status, content
type and schema. `/v1/subscribe` is left out: an event stream never ends, so no generated request
to it could complete; test_server.py covers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.serving import make_tokens, start_server


def test_the_api_matches_its_openapi_document(lmdb_target: str, tmp_path: Path) -> None:
    tokens = make_tokens(lmdb_target)
    server = start_server(lmdb_target, tmp_path, tokens=tokens)
    try:
        with server.client("admin") as admin:
            events = [
                {"type": "EnterMaintenance", "subject": "node-1"},
                {"type": "BackendCrashed", "subject": "b-1"},
            ]
            body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
            admin.post("/v1/events", content=body, headers={"content-type": "application/jsonl"})
        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(root),
        }
        result = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                "-H", f"Authorization: Bearer {tokens['admin']}",
                "-c", "no_unexpected_server_error,response_schema_conformance,"
                "status_code_conformance,content_type_conformance",
                "-n", os.environ.get("ADMINCHAIN_SCHEMATHESIS_EXAMPLES", "8"),
                "--exclude-path", "/v1/subscribe",
                "--generation-deterministic",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in result.stdout
    finally:
        assert server.stop() == 0
