"""RFC 6962 proof verification against transparency-dev/merkle's test vectors.

Every JSON file under ``shared/testvectors/rfc6962`` is one case: ``inclusion/**`` files hold
``leafIdx, treeSize, root, leafHash, proof``; ``consistency/**`` files hold ``size1, size2,
root1, root2, proof``. Byte fields are standard base64 (Go's encoding of ``[]byte``); a
``null`` proof is an empty proof. ``wantErr`` says whether verification must refuse the case.
The file name is only a description: some cases that are not ``happy-path.json`` must verify
(e.g. ``single-entry/matching-root-and-leaf.json``), so the test follows ``wantErr``.

The folder is found at ``$ADMINCHAIN_TESTVECTORS``, beside the repository
(``../shared/testvectors/rfc6962``), or in the vendored copy ``tests/testvectors/rfc6962``.
A missing folder fails the run, unless ``ADMINCHAIN_ALLOW_MISSING_VECTORS`` is set, in which
case it is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import ProofError
from ledger.merkle import check_consistency, check_inclusion, verify_consistency, verify_inclusion


def _vectors_dir() -> Path:
    """$ADMINCHAIN_TESTVECTORS, else ../shared beside the repository, else the vendored copy
    in tests/testvectors (the same files with their LICENSE), so a fresh clone runs them all."""
    override = os.environ.get("ADMINCHAIN_TESTVECTORS")
    if override:
        return Path(override)
    shared = Path(__file__).parents[1].parent / "shared" / "testvectors" / "rfc6962"
    return shared if shared.is_dir() else Path(__file__).parent / "testvectors" / "rfc6962"


VECTORS = _vectors_dir()
FILES = sorted(VECTORS.rglob("*.json")) if VECTORS.is_dir() else []
MISSING = "<missing>"


def _ids() -> list[str]:
    return [str(f.relative_to(VECTORS)) for f in FILES] or [MISSING]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _load(name: str) -> dict[str, Any]:
    if name == MISSING:
        reason = (
            f"RFC 6962 test vectors not found at {VECTORS} (set ADMINCHAIN_TESTVECTORS to "
            "their folder, or ADMINCHAIN_ALLOW_MISSING_VECTORS=1 to skip)"
        )
        if os.environ.get("ADMINCHAIN_ALLOW_MISSING_VECTORS"):
            pytest.skip(reason)
        pytest.fail(reason)
    case: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return case


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in case["proof"] or []]


@pytest.mark.parametrize("name", _ids())
def test_vector(name: str) -> None:
    case = _load(name)
    want_error = case["wantErr"]
    assert isinstance(want_error, bool)
    proof = _proof(case)
    if name.startswith("inclusion"):
        leaf, root = _b64(case["leafHash"]), _b64(case["root"])
        args = (leaf, case["leafIdx"], case["treeSize"], proof, root)
        assert verify_inclusion(*args) is not want_error, case["desc"]
        if want_error:
            with pytest.raises(ProofError):
                check_inclusion(*args)
        else:
            check_inclusion(*args)
    elif name.startswith("consistency"):
        cargs = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
        assert verify_consistency(*cargs) is not want_error, case["desc"]
        if want_error:
            with pytest.raises(ProofError):
                check_consistency(*cargs)
        else:
            check_consistency(*cargs)
    else:
        pytest.fail(f"{name}: neither an inclusion nor a consistency case")


def test_vector_set_is_complete() -> None:
    """Guard against a half-copied folder: both kinds, happy paths and refusals present."""
    if not FILES:
        _load(MISSING)
    names = [str(f.relative_to(VECTORS)) for f in FILES]
    for kind in ("inclusion", "consistency"):
        cases = [_load(n) for n in names if n.startswith(kind)]
        assert sum(not c["wantErr"] for c in cases) >= 5, kind
        assert sum(c["wantErr"] for c in cases) >= 50, kind
