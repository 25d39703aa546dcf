"""Transparency from outside (SPEC-server §9), with real processes: `adminchain serve` publishing
cosigned checkpoints and tiles, three `adminchain witness serve` processes (quorum 2), and an
independent client, Go's golang.org/x/mod/sumdb/tlog and sumdb/note (tests/go/tlogclient),
which proves inclusion and consistency from our tiles alone and checks them and the witness
cosignatures against our signed checkpoint.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import httpx
import pytest

from ledger.cosign import cosigned_by
from ledger.ledger import Ledger
from ledger.tiles import encode_index
from ledger.witness import add_checkpoint_body
from tests.transparency_support import (
    cli,
    events,
    go_client,
    go_result,
    log_keys,
    make_witnesses,
    run_go,
    running,
    serving,
    wait_checkpoint,
)

pytestmark = pytest.mark.timeout(600)


def _origin(path: Path) -> str:
    with Ledger.open(path) as ledger:
        return ledger.origin()


def _witness_args(witnesses: list, quorum: int) -> list[str]:  # type: ignore[type-arg]
    args = []
    for w in witnesses:
        args += ["--witness", f"{w.url}={w.pub_file}"]
    return [*args, "--quorum", str(quorum)]


def _key_args(witnesses: list) -> list[str]:  # type: ignore[type-arg]
    args = []
    for w in witnesses:
        args += ["--witness-key", str(w.pub_file)]
    return args


def test_go_client_proves_from_our_tiles_against_a_cosigned_checkpoint(tmp_path: Path) -> None:
    """serve publishes checkpoints cosigned by 2 of 3 witnesses; Go fetches /checkpoint, checks
    the log's signature and 2 cosignatures, then proves records (first, middle, last) and the
    consistency with an earlier checkpoint from tiles and entry bundles alone."""
    binary = go_client(tmp_path)
    keys = log_keys(tmp_path)
    path = tmp_path / "log.lmdb"
    first = 300  # level-0: one full tile and a partial one; level 1: partial
    total = 65_536 + 2 * 256 + 77  # a full level-1 tile, partial tiles on levels 0, 1 and 2
    with Ledger.open(path) as ledger:
        ledger.append_batch(events(0, first))
        origin = ledger.origin()
    witnesses = make_witnesses(tmp_path, 3)
    log_arg = f"{origin}={keys.log_pub}"
    serve_args = ["--checkpoint-key", str(keys.log_key), "--checkpoint-every", "100ms"]
    with running(witnesses, [log_arg]):
        serve_args += _witness_args(witnesses, 2)
        with serving(str(path), tmp_path, *serve_args) as url:
            old_note = wait_checkpoint(url, first)
        assert len(cosigned_by(old_note, [w.vkey for w in witnesses])) == 3
        (tmp_path / "old.checkpoint").write_text(old_note)
        with Ledger.open(path) as ledger:
            for start in range(first, total, 20_000):
                ledger.append_batch(events(start, min(20_000, total - start)))
        witnesses[2].kill()  # one witness down: 2 of 3 still make the quorum
        with serving(str(path), tmp_path, *serve_args) as url:
            note = wait_checkpoint(url, total)
            full = httpx.get(f"{url}/tile/0/000")
            partial = httpx.get(f"{url}/tile/0/{encode_index(total // 256)}.p/{total % 256}")
            bundle = httpx.get(f"{url}/tile/entries/000", headers={"Accept-Encoding": "gzip"})
            assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert len(full.content) == 8192
            assert partial.headers["cache-control"] == "public, max-age=5"
            assert len(partial.content) == 32 * (total % 256)
            wider = f"{url}/tile/0/{encode_index(total // 256)}.p/{total % 256 + 1}"
            assert httpx.get(wider).status_code == 404  # beyond the tree
            assert bundle.headers.get("content-encoding") == "gzip"
            assert httpx.get(f"{url}/tile/0/00").status_code == 404  # not canonical
            vkeys = [w.vkey for w in witnesses]
            result = go_result(
                run_go(
                    binary, url, keys.log.verifier.encode(), vkeys, 2, tmp_path / "old.checkpoint"
                )
            )
            # a quorum of 3 is refused by the Go client: only 2 witnesses cosigned
            refused = run_go(binary, url, keys.log.verifier.encode(), vkeys, 3)
    assert result["size"] == total
    assert result["consistent_from"] == first
    assert result["records_checked"] == [0, total // 2, total - 1]
    names = result["cosigned_by"]
    assert isinstance(names, list)
    assert sorted(names) == ["witness.example/w1", "witness.example/w2"]
    assert note.split("\n")[1] == str(total)
    assert refused.returncode == 1
    assert "fewer than the quorum 3" in refused.stderr


def test_quorum_fork_rollback_and_kill(tmp_path: Path) -> None:
    """Three witnesses, quorum 2: a proof with one cosignature is refused by `prove --verify`;
    a forked and a rolled-back log of the same origin get 409 or 422 from every witness; a
    witness killed with kill -9 after answering keeps what it cosigned."""
    keys = log_keys(tmp_path)
    main, rolled = tmp_path / "main.lmdb", tmp_path / "rolled.lmdb"
    with Ledger.open(main) as ledger:
        ledger.append_batch(events(0, 6))
        origin = ledger.origin()
        with Ledger.open(rolled) as backup:  # a byte-for-byte backup at size 6
            backup.copy_from(ledger)
        ledger.append_batch(events(6, 4))
    fork = tmp_path / "fork.lmdb"
    with Ledger.open(fork) as other:  # the same origin, another event at position 4
        other.backend.put_meta("origin", origin.encode())
        other.append_batch(events(0, 3))
        other.append_batch(events(3, 9, tag="-forked"))
    witnesses = make_witnesses(tmp_path, 3)
    log_arg = f"{origin}={keys.log_pub}"
    with running(witnesses, [log_arg]):
        cli("checkpoint", "--ledger", str(main), "--key", str(keys.log_key),
            *_witness_args(witnesses, 2))  # fmt: skip
        proof = tmp_path / "p.proof"
        cli("prove", "5", "--ledger", str(main), "--out", str(proof), *_key_args(witnesses),
            "--quorum", "2")  # fmt: skip
        text = proof.read_text()
        assert text.count("\u2014 witness.example/") == 3
        ok = cli("prove", "--verify", str(proof), "--pub", str(keys.log_pub),
                 *_key_args(witnesses), "--quorum", "2", "--json")  # fmt: skip
        assert (
            '"cosigned_by":["witness.example/w1","witness.example/w2","witness.example/w3"]'
            in ok.stdout
        )
        # one cosignature left: refused (exit 1), and so is a quorum the file does not meet
        lines = text.split("\n")
        dropped = ("\u2014 witness.example/w2", "\u2014 witness.example/w3")
        one = "\n".join(x for x in lines if not x.startswith(dropped))
        (tmp_path / "one.proof").write_text(one)
        bad = cli("prove", "--verify", str(tmp_path / "one.proof"), "--pub", str(keys.log_pub),
                  *_key_args(witnesses), "--quorum", "2", check=False)  # fmt: skip
        assert bad.returncode == 1
        assert (
            "1 valid witness cosignature(s) (witness.example/w1), fewer than the quorum of 2"
            in bad.stderr
        )
        assert cli("verify", "--ledger", str(main), "--pub", str(keys.log_pub),
                   *_key_args(witnesses), "--quorum", "3").returncode == 0  # fmt: skip

        # the fork: every witness answers 409 (it has 10), then 422 (no proof from its 10)
        refused = cli("checkpoint", "--ledger", str(fork), "--key", str(keys.log_key),
                      *_witness_args(witnesses, 1), check=False)  # fmt: skip
        assert refused.returncode == 1
        assert "only 0 of 3 witness(es) cosigned" in refused.stderr
        for w in witnesses:
            assert f"{w.signer.name}: 422:" in refused.stderr
        with Ledger.open(fork) as other:
            assert other.checkpoints() == []  # nothing published
            fork_note = _signed_note(other, keys)
            proof_from_10 = other.consistency_proof(10, other.size())
        for w in witnesses:
            assert _post(w.url, 0, [], fork_note) == (409, "10\n")
            assert _post(w.url, 10, proof_from_10, fork_note)[0] == 422

        # the rollback: restored to 6, then grown to 12 with other events
        with Ledger.open(rolled) as backup:
            backup.append_batch(events(100, 6, tag="-after-restore"))
        refused = cli("checkpoint", "--ledger", str(rolled), "--key", str(keys.log_key),
                      *_witness_args(witnesses, 1), check=False)  # fmt: skip
        assert refused.returncode == 1
        for w in witnesses:
            assert f"{w.signer.name}: 422:" in refused.stderr
        with Ledger.open(rolled) as backup:
            rolled_note = _signed_note(backup, keys)
            rolled_proof = backup.consistency_proof(10, backup.size())
        for w in witnesses:
            assert _post(w.url, 0, [], rolled_note) == (409, "10\n")
            assert _post(w.url, 10, rolled_proof, rolled_note)[0] == 422

        # kill -9 right after a witness answered: it keeps the checkpoint it cosigned
        with Ledger.open(main) as ledger:
            ledger.append_batch(events(10, 5))
        cli("checkpoint", "--ledger", str(main), "--key", str(keys.log_key),
            *_witness_args(witnesses, 3))  # fmt: skip
        victim = witnesses[0]
        victim.kill(signal.SIGKILL)
        victim.start([log_arg])
        assert _post(victim.url, 0, [], rolled_note) == (409, "15\n")
        origin_hash = hashlib.sha256(origin.encode()).hexdigest()
        kept = httpx.get(f"{victim.url}/{origin_hash}/checkpoint").text
        assert kept.split("\n")[1] == "15"
        assert [c.name for c in cosigned_by(kept, [victim.vkey])] == [victim.signer.name]


def _signed_note(ledger: Ledger, keys: object) -> str:
    from ledger.notes import Checkpoint  # noqa: PLC0415

    size = ledger.size()
    checkpoint = Checkpoint(ledger.origin(), size, ledger.root(size), bytes(32))
    return checkpoint.sign(keys.log)  # type: ignore[attr-defined]


def _post(url: str, old: int, proof: list[bytes], note: str) -> tuple[int, str]:
    response = httpx.post(f"{url}/add-checkpoint", content=add_checkpoint_body(old, proof, note))
    return response.status_code, response.text


class _Tamper:
    """A proxy in front of the server that changes one byte of the responses to one route."""

    def __init__(self, upstream: str) -> None:
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.prefix: str | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                response = httpx.get(upstream + self.path)
                body = bytearray(response.content)
                if proxy.prefix and self.path.startswith(proxy.prefix) and body:
                    # a hash's or an event's last byte; the checkpoint's middle
                    body[len(body) // 2 if self.path == "/checkpoint" else -1] ^= 1
                self.send_response(response.status_code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(bytes(body))

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_go_client_refuses_changed_tiles_bundles_and_checkpoints(
    tmp_path: Path, ledger_target: str
) -> None:
    """On each backend, the Go client proves from our tiles, and behind a proxy that flips one
    byte (of a hash tile, of an entry bundle, of the checkpoint) refuses each change."""
    binary = go_client(tmp_path)
    keys = log_keys(tmp_path)
    path = ledger_target
    with Ledger.open(path) as ledger:
        ledger.append_batch(events(0, 700))
    serve_args = ["--checkpoint-key", str(keys.log_key), "--checkpoint-every", "100ms"]
    with serving(str(path), tmp_path, *serve_args) as url:
        wait_checkpoint(url, 700)
        proxy = _Tamper(url)
        try:
            vkey = keys.log.verifier.encode()
            assert go_result(run_go(binary, proxy.url, vkey, [], 0))["size"] == 700
            for prefix, why in (
                ("/tile/0/", "tile"),
                ("/tile/1/", "tile"),
                ("/tile/entries/", "record"),
                ("/checkpoint", "checkpoint"),
            ):
                proxy.prefix = prefix
                refused = run_go(binary, proxy.url, vkey, [], 0)
                assert refused.returncode == 1, prefix
                assert why in refused.stderr, (prefix, refused.stderr)
        finally:
            proxy.close()
