"""Commands an auditor runs: replay, verify, checkpoint, prove, keygen."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from adminchain import render
from adminchain.cli import (
    EXIT_FAILED,
    emit_json,
    ledger_options,
    main,
    open_ledger,
    open_views,
    parse_as_of,
    require_local,
)
from ledger.errors import UsageError


def read_key_file(path: str, what: str) -> str:
    """The one key string a key file holds."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from e
    if not text:
        raise UsageError(f"{what} {path} is empty")
    return text


def signer_from(path: str | None) -> Any:
    """The checkpoint signer in a private key file (None without a file)."""
    if path is None:
        return None
    from ledger.notes import Signer  # noqa: PLC0415

    return Signer.parse(read_key_file(path, "signing key"))


def verifiers_from(paths: tuple[str, ...]) -> list[Any] | None:
    """Verifier keys from public key files (None when none are given)."""
    if not paths:
        return None
    from ledger.notes import Verifier  # noqa: PLC0415

    return [Verifier.parse(read_key_file(p, "public key")) for p in paths]


key_option = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    envvar="ADMINCHAIN_CHECKPOINT_KEY",
    help="Private key file to sign with (`adminchain keygen`) [env: ADMINCHAIN_CHECKPOINT_KEY].",
)
pub_option = click.option(
    "--pub",
    "pub_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    envvar="ADMINCHAIN_VERIFY_KEY",
    help="Public key file(s) checkpoints must be signed by [env: ADMINCHAIN_VERIFY_KEY].",
)


@main.command()
@click.option("--to", metavar="POSITION|TIME", help="Replay up to a position or a recorded time.")
@ledger_options
def replay(to: str | None, ledger: str, as_json: bool) -> None:
    """Rebuild every projection from the log and print the audit.

    Counts each projection's verdicts, lists every refused event with its reason, and compares
    the rebuilt state with the stored projections: exit 1 if any diverged.

    \b
    Example:
      adminchain replay
      adminchain replay --to 1200 --json
      adminchain replay --to 2026-11-25T09:00:00Z
    """
    from replay.audit import run_audit  # noqa: PLC0415
    from replay.rebuild import position_at  # noqa: PLC0415

    log = open_ledger(ledger, create=False)
    position, when = parse_as_of(to, "--to")
    if when is not None:
        position = position_at(log, when)
    with render.progress_bar("replaying", log.size(), enabled=not as_json) as update:
        report = run_audit(log, position, progress=update)
    if as_json:
        emit_json(report.to_json())
    else:
        render.replay_report(report)
    if report.diverged:
        sys.exit(EXIT_FAILED)


@main.command()
@pub_option
@ledger_options
def verify(pub_paths: tuple[str, ...], ledger: str, as_json: bool) -> None:
    """Recompute every leaf, the tree and the projection digests; name the first bad position.

    Exit 1 if anything was changed, removed, reordered or inserted, or if a checkpoint does not
    verify (with --pub, checkpoints must be signed by one of those keys).

    \b
    Example:
      adminchain verify --pub auditor.pub
    """
    from replay.integrity import verify as verify_log  # noqa: PLC0415

    verifiers = verifiers_from(pub_paths)
    log = open_ledger(ledger, create=False)
    with render.progress_bar("verifying", log.size(), enabled=not as_json) as update:
        result = verify_log(log, verifiers=verifiers, progress=update)
    if as_json:
        emit_json(result.to_json())
    else:
        render.verify_result(result)
    if not result.ok:
        sys.exit(EXIT_FAILED)


@main.command()
@key_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the note to this file.",
)
@ledger_options
def checkpoint(key_path: str | None, out: str | None, ledger: str, as_json: bool) -> None:
    """Record a checkpoint: tree size, root and projection digest, signed with --key.

    The note (C2SP tlog-checkpoint with an adminchain-state-sha256 extension line) is stored in
    the ledger and printed; `verify` checks the log against every stored checkpoint.

    \b
    Example:
      adminchain keygen auditor && adminchain checkpoint --key auditor.key --out cp.txt
    """
    from replay.integrity import is_signed, make_checkpoint  # noqa: PLC0415

    signer = signer_from(key_path)
    checkpoint_, note = make_checkpoint(open_views(ledger), signer)
    signed = signer is not None or is_signed(note)
    if out:
        Path(out).write_text(note, encoding="utf-8")
    if as_json:
        emit_json(
            {
                "origin": checkpoint_.origin,
                "size": checkpoint_.size,
                "root": checkpoint_.root.hex(),
                "state_digest": checkpoint_.state_digest.hex(),
                "signed": signed,
                "note": note,
            }
        )
    else:
        render.checkpoint_note(checkpoint_, note, signed=signed)


@main.command()
@click.argument("name")
@click.option(
    "--out", "prefix", help="File prefix (default: NAME): writes PREFIX.key and PREFIX.pub."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def keygen(name: str, prefix: str | None, force: bool, as_json: bool) -> None:
    """Make an Ed25519 key pair NAME: PREFIX.key (private, 0600) and PREFIX.pub.

    The same keys sign checkpoints (`checkpoint --key`) and operator events (`--sign-key`);
    give the .pub file to auditors (`verify --pub`) or trust it (`adminchain trust add`).

    \b
    Example:
      adminchain keygen alice
    """
    from ledger.notes import generate_key  # noqa: PLC0415

    base = Path(prefix or name)
    private, public = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private, public):
        if path.exists() and not force:
            raise UsageError(f"{path} exists; use --force to overwrite it")
    signer, verifier = generate_key(name)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(signer + "\n")
    os.chmod(private, 0o600)
    public.write_text(verifier + "\n", encoding="utf-8")
    if as_json:
        emit_json(
            {
                "name": name,
                "private_key_file": str(private),
                "public_key_file": str(public),
                "public_key": verifier,
            }
        )
    else:
        render.console.print(
            f"private key: {private} (keep it secret)\npublic key:  {public}\n{verifier}"
        )


@main.command()
@click.argument("position", type=click.IntRange(min=1), required=False)
@click.option(
    "--consistency",
    "old_size",
    type=click.IntRange(min=0),
    metavar="OLD_SIZE",
    help="Prove the checkpoint of OLD_SIZE is a prefix of the newest (or --new-size).",
)
@click.option(
    "--new-size",
    type=click.IntRange(min=0),
    help="With --consistency: the newer checkpoint's size.",
)
@click.option(
    "--verify",
    "verify_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify a proof file offline (needs no ledger); with --pub, its signatures too.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Write the proof to this file (default: stdout)."
)
@key_option
@pub_option
@ledger_options
def prove(
    position: int | None,
    old_size: int | None,
    new_size: int | None,
    verify_path: str | None,
    out: str | None,
    key_path: str | None,
    pub_paths: tuple[str, ...],
    ledger: str,
    as_json: bool,
) -> None:
    """Write a self-contained proof that the event at POSITION is in the log.

    The file (C2SP tlog-proof) carries the event, its audit path and the checkpoint it leads to;
    anyone can check it with `adminchain prove --verify FILE --pub KEY.pub`, without the ledger.
    With --consistency OLD_SIZE: a proof that an older checkpoint is a prefix of a newer one.

    \b
    Examples:
      adminchain prove 42 --out event-42.proof
      adminchain prove --verify event-42.proof --pub auditor.pub
      adminchain prove --consistency 1000 --out 1000-to-now.proof
    """
    from replay.prove import prove_consistency, prove_inclusion, verify_proof_file  # noqa: PLC0415

    if verify_path is not None:
        proven = verify_proof_file(Path(verify_path).read_bytes(), verifiers_from(pub_paths))
        if as_json:
            emit_json(proven.to_json())
        else:
            render.proof_verified(proven, signed=bool(pub_paths))
        return
    if (position is None) == (old_size is None):
        raise UsageError("give a POSITION, or --consistency OLD_SIZE, or --verify FILE")
    log = open_ledger(ledger, create=False)
    if position is not None:
        text = prove_inclusion(log, position, signer_from(key_path))
    else:
        assert old_size is not None
        text = prove_consistency(log, old_size, new_size)
    if out:
        Path(out).write_text(text, encoding="utf-8")
        if as_json:
            emit_json({"file": out, "kind": "inclusion" if position else "consistency"})
        else:
            render.console.print(f"proof written to {out}")
    elif as_json:
        emit_json({"kind": "inclusion" if position else "consistency", "proof": text})
    else:
        click.echo(text, nl=False)


@main.group()
def trust() -> None:
    """Require signed operator events: manage the ledger's trusted operator keys.

    Once a key is trusted, every operator event appended must be signed by a trusted key
    (`--sign-key`); unsigned or wrongly signed ones are refused (exit 2, nothing stored), and
    `replay` / `verify` flag any that got into the log from that point on.

    \b
    Example:
      adminchain keygen alice && adminchain trust add alice.pub
      adminchain maintenance enter node-7 --sign-key alice.key
    """


@trust.command("add")
@click.argument("public_key_file", type=click.Path(exists=True, dir_okay=False))
@ledger_options
def trust_add(public_key_file: str, ledger: str, as_json: bool) -> None:
    """Trust the operator public key in PUBLIC_KEY_FILE.

    \b
    Example:
      adminchain trust add alice.pub
    """
    require_local(ledger, "trust add")
    policy = open_ledger(ledger).trust(read_key_file(public_key_file, "public key"))
    _show_trust(policy, as_json)


@trust.command("remove")
@click.argument("name")
@ledger_options
def trust_remove(name: str, ledger: str, as_json: bool) -> None:
    """Stop trusting the operator key(s) called NAME.

    \b
    Example:
      adminchain trust remove alice
    """
    require_local(ledger, "trust remove")
    _show_trust(open_ledger(ledger, create=False).untrust(name), as_json)


@trust.command("list")
@ledger_options
def trust_list(ledger: str, as_json: bool) -> None:
    """List the trusted operator keys.

    \b
    Example:
      adminchain trust list --json
    """
    require_local(ledger, "trust list (the server does not serve its trusted keys)")
    _show_trust(open_ledger(ledger, create=False).trust_policy(), as_json)


def _show_trust(policy: Any, as_json: bool) -> None:
    data = (
        {"since": policy.since, "keys": list(policy.keys)}
        if policy
        else {"since": None, "keys": []}
    )
    if as_json:
        emit_json(data)
    elif not data["keys"]:
        render.console.print("no trusted operator keys: signatures are not required")
    else:
        render.console.print(
            f"operator events must be signed from position {data['since']} on, by:"
        )
        for key in data["keys"]:
            render.console.print(f"  {key}")
