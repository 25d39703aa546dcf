"""Commands an auditor runs: replay, verify, checkpoint, prove, keygen."""

from __future__ import annotations

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
    write_file,
)
from ledger.errors import UsageError


def warn(message: str) -> None:
    """A warning on stderr (stdout stays for the output, and for --json)."""
    click.secho(f"warning: {message}", err=True, fg="yellow")


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


def witness_policy(keys: tuple[str, ...], quorum: int | None) -> Any:
    """The witnesses an auditor requires (None without --witness-key)."""
    if not keys:
        if quorum is not None:
            raise UsageError("--quorum needs --witness-key")
        return None
    from ledger.cosign import WitnessPolicy  # noqa: PLC0415

    return WitnessPolicy.of([_key_text(k) for k in keys], quorum)


def _key_text(value: str) -> str:
    """A key given inline or as a file holding it."""
    return read_key_file(value, "witness key") if Path(value).is_file() else value


def witness_options(func: Any) -> Any:
    """`--witness-key` and `--quorum`: checkpoints cosigned by that many (SPEC-server §9)."""
    func = click.option(
        "--quorum",
        type=click.IntRange(min=1),
        help="How many of the --witness-key witnesses must have cosigned (default: all).",
    )(func)
    return click.option(
        "--witness-key",
        "witness_keys",
        multiple=True,
        metavar="VKEY|FILE",
        help="A witness's public key (`adminchain witness keygen`); repeat for each witness.",
    )(func)


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
    from replay import workers  # noqa: PLC0415
    from replay.audit import run_audit  # noqa: PLC0415
    from replay.rebuild import position_at  # noqa: PLC0415

    with workers.standing_by(ledger):  # the second process of a long replay, ready at once
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
@witness_options
@ledger_options
def verify(
    pub_paths: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Recompute every leaf, the tree and the projection digests; name the first bad position.

    Exit 1 if anything was changed, removed, reordered or inserted, or if a checkpoint does not
    verify (with --pub, checkpoints must be signed by one of those keys; with --witness-key,
    cosigned by --quorum of those witnesses).

    \b
    Example:
      adminchain verify --pub auditor.pub
      adminchain verify --pub auditor.pub --witness-key w1.pub --witness-key w2.pub --quorum 1
    """
    from replay import workers  # noqa: PLC0415
    from replay.integrity import verify as verify_log  # noqa: PLC0415

    verifiers = verifiers_from(pub_paths)
    witnesses = witness_policy(witness_keys, quorum)
    with workers.standing_by(ledger):  # the digests' process of a long verify, ready at once
        log = open_ledger(ledger, create=False)
        with render.progress_bar("verifying", log.size(), enabled=not as_json) as update:
            result = verify_log(log, verifiers=verifiers, witnesses=witnesses, progress=update)
    if as_json:
        emit_json(result.to_json())
    else:
        render.verify_result(result)
    if result.hidden is not None:
        warn(
            f"positions {result.hidden[0]}-{result.hidden[1]} hold a big append that is not "
            "part of the log (yet): one under way, or one cut short, which the next append "
            "removes; they were not verified"
        )
    if not result.ok:
        sys.exit(EXIT_FAILED)


@main.command()
@key_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the note to this file.",
)
@click.option(
    "--witness",
    "witness_urls",
    multiple=True,
    metavar="URL=KEY",
    help="A witness to cosign the checkpoint: its URL and public key (inline or a file).",
)
@click.option(
    "--quorum",
    type=click.IntRange(min=1),
    help="Store the checkpoint only once this many witnesses cosigned it (default: all).",
)
@ledger_options
def checkpoint(
    key_path: str | None,
    out: str | None,
    witness_urls: tuple[str, ...],
    quorum: int | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Record a checkpoint: tree size, root and projection digest, signed with --key.

    The note (C2SP tlog-checkpoint with an adminchain-state-sha256 extension line) is stored in
    the ledger and printed; `verify` checks the log against every stored checkpoint.

    With --witness (C2SP tlog-witness), each witness is sent the checkpoint with a consistency
    proof from the size it last cosigned; the checkpoint is stored, with their cosignatures,
    only if --quorum of them cosigned it (else exit 1, nothing stored).

    \b
    Example:
      adminchain keygen --log && adminchain checkpoint --key log.key --out cp.txt
      adminchain checkpoint --key log.key --quorum 2 \\
          --witness http://w1:8471=w1.pub --witness http://w2:8471=w2.pub \\
          --witness http://w3:8471=w3.pub
    """
    from replay.integrity import is_signed, key_name_warning, make_checkpoint  # noqa: PLC0415

    signer = signer_from(key_path)
    views = open_views(ledger)
    publish = None
    if witness_urls:
        from ledger.witness import WitnessEndpoint, publish_checkpoint  # noqa: PLC0415

        witnesses = [WitnessEndpoint.parse(w) for w in witness_urls]
        need = len(witnesses) if quorum is None else quorum

        def publish(checkpoint_: Any, note: str) -> str:
            return publish_checkpoint(views.ledger, note, checkpoint_.size, witnesses, need)

    elif quorum is not None:
        raise UsageError("--quorum needs --witness")
    checkpoint_, note = make_checkpoint(views, signer, publish)
    if signer is not None and (warning := key_name_warning(signer, checkpoint_.origin)):
        warn(warning)
    signed = signer is not None or is_signed(note)
    if out:
        write_file(out, note)
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
@click.argument("name", required=False)
@click.option(
    "--log",
    "for_log",
    is_flag=True,
    help="The log's own checkpoint key: named after the ledger's origin (default file: log.key).",
)
@click.option(
    "--out", "prefix", help="File prefix (default: NAME): writes PREFIX.key and PREFIX.pub."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@ledger_options
def keygen(
    name: str | None, for_log: bool, prefix: str | None, force: bool, ledger: str, as_json: bool
) -> None:
    """Make an Ed25519 key pair NAME: PREFIX.key (private, 0600) and PREFIX.pub.

    The same keys sign checkpoints (`checkpoint --key`) and operator events (`--sign-key`);
    give the .pub file to auditors (`verify --pub`) or trust it (`adminchain trust add`).
    With --log (and no NAME), the key is the log's own: named after the origin of the ledger
    (--ledger), as C2SP tlog-checkpoint asks of a log's checkpoint key.

    \b
    Examples:
      adminchain keygen alice
      adminchain keygen --log && adminchain checkpoint --key log.key
    """
    from ledger.notes import generate_key  # noqa: PLC0415

    if for_log == (name is not None):
        raise UsageError("give a key NAME, or --log for the ledger's own checkpoint key")
    if name is None:
        name = open_ledger(ledger, create=False).origin()
        prefix = prefix or "log"
    base = Path(prefix or name)
    private, public = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private, public):
        if path.exists() and not force:
            raise UsageError(f"{path} exists; use --force to overwrite it")
    signer, verifier = generate_key(name)
    write_file(private, signer + "\n", 0o600)
    write_file(public, verifier + "\n")
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
@witness_options
@ledger_options
def prove(
    position: int | None,
    old_size: int | None,
    new_size: int | None,
    verify_path: str | None,
    out: str | None,
    key_path: str | None,
    pub_paths: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Write a self-contained proof that the event at POSITION is in the log.

    The file (C2SP tlog-proof) carries the event, its audit path and the checkpoint it leads to;
    anyone can check it with `adminchain prove --verify FILE --pub KEY.pub`, without the ledger.
    With --consistency OLD_SIZE: a proof that an older checkpoint is a prefix of a newer one.
    With --witness-key (and --quorum): only checkpoints cosigned by that many of those witnesses
    are used, and --verify refuses a file whose checkpoint carries fewer valid cosignatures.

    \b
    Examples:
      adminchain prove 42 --out event-42.proof
      adminchain prove --verify event-42.proof --pub auditor.pub
      adminchain prove --consistency 1000 --out 1000-to-now.proof
    """
    from replay.prove import prove_consistency, prove_inclusion, verify_proof_file  # noqa: PLC0415

    witnesses = witness_policy(witness_keys, quorum)
    if verify_path is not None:
        proven = verify_proof_file(
            Path(verify_path).read_bytes(), verifiers_from(pub_paths), witnesses
        )
        if as_json:
            emit_json(proven.to_json())
        else:
            render.proof_verified(proven, signed=bool(pub_paths))
        return
    if (position is None) == (old_size is None):
        raise UsageError("give a POSITION, or --consistency OLD_SIZE, or --verify FILE")
    log = open_ledger(ledger, create=False)
    if position is not None:
        text = prove_inclusion(log, position, signer_from(key_path), witnesses, notice=warn)
    else:
        assert old_size is not None
        text = prove_consistency(log, old_size, new_size, witnesses)
    if out:
        write_file(out, text)
        if as_json:
            emit_json({"file": out, "kind": "inclusion" if position else "consistency"})
        else:
            render.console.print(f"proof written to {out}")
    elif as_json:
        emit_json({"kind": "inclusion" if position else "consistency", "proof": text})
    else:
        click.echo(text, nl=False)


sign_key_option = click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="ADMINCHAIN_SIGN_KEY",
    help="Sign with this operator key file: a key trusted now (only a ledger's first TrustKey "
    "may be unsigned) [env: ADMINCHAIN_SIGN_KEY].",
)
actor_option = click.option(
    "--actor",
    envvar="ADMINCHAIN_ACTOR",
    help="Who is doing this (default: the login name; with --sign-key, the key's name).",
)


def _operator_key(path: str | None) -> Any:
    if path is None:
        return None
    from ledger.signing import OperatorKey  # noqa: PLC0415

    return OperatorKey.load(path)


@main.group()
def trust() -> None:
    """Which operator keys are trusted: recorded in the log (TrustKey, RevokeKey events).

    Once a key is trusted, every operator event must be signed by a key trusted at its position
    (`--sign-key`), trust changes included; unsigned or wrongly signed ones are refused (exit 2,
    nothing stored), and `replay` / `verify` flag any that got into the log. A revoked key signs
    nothing after its revocation; what it signed before stays valid.

    \b
    Example:
      adminchain keygen alice && adminchain trust add alice.pub
      adminchain keygen bob && adminchain trust add bob.pub --sign-key alice.key
      adminchain maintenance enter node-7 --sign-key bob.key
      adminchain trust list --as-of 2
    """


@trust.command("add")
@click.argument("public_key_file", type=click.Path(exists=True, dir_okay=False))
@sign_key_option
@actor_option
@ledger_options
def trust_add(
    public_key_file: str, sign_key: str | None, actor: str | None, ledger: str, as_json: bool
) -> None:
    """Trust the operator public key in PUBLIC_KEY_FILE (appends a TrustKey).

    The ledger's first TrustKey may be unsigned; every later one must be signed by a trusted
    key. Trusting a name again with a new key rotates it.

    \b
    Example:
      adminchain trust add alice.pub
      adminchain trust add bob.pub --sign-key alice.key
    """
    require_local(ledger, "trust add")
    key = read_key_file(public_key_file, "public key")
    trusted = open_ledger(ledger).trust(key, signer=_operator_key(sign_key), actor=actor)
    _show_trust(trusted, as_json)


@trust.command("remove")
@click.argument("name")
@click.option("--reason", help="Why the key is revoked (recorded in the event).")
@sign_key_option
@actor_option
@ledger_options
def trust_remove(
    name: str,
    reason: str | None,
    sign_key: str | None,
    actor: str | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Revoke the operator key called NAME (appends a RevokeKey, signed by a trusted key).

    The key signs nothing from here on; the events it signed before stay valid.

    \b
    Example:
      adminchain trust remove bob --sign-key alice.key --reason "left the team"
    """
    require_local(ledger, "trust remove")
    trusted = open_ledger(ledger, create=False).untrust(
        name, signer=_operator_key(sign_key), actor=actor, reason=reason
    )
    _show_trust(trusted, as_json)


@trust.command("list")
@click.option("--as-of", metavar="POSITION|TIME", help="The keys trusted at a position or time.")
@ledger_options
def trust_list(as_of: str | None, ledger: str, as_json: bool) -> None:
    """List the operator keys trusted now (or at --as-of), from the log's trust events.

    \b
    Example:
      adminchain trust list --json
      adminchain trust list --as-of 2026-11-25T09:00:00Z
    """
    from replay.rebuild import position_at  # noqa: PLC0415

    log = open_ledger(ledger, create=False)
    position, when = parse_as_of(as_of)
    if when is not None:
        position = position_at(log, when)
    _show_trust(log.trusted_keys(position), as_json)


@trust.command("rebuild")
@ledger_options
def trust_rebuild(ledger: str, as_json: bool) -> None:
    """Rewrite the trust record appends are checked against, from the log's trust events.

    Needed only if `verify` says the record differs from the log (it is kept in step by every
    append; a change behind the ledger's back can break that).

    \b
    Example:
      adminchain trust rebuild
    """
    from ledger.trust import rebuild_record  # noqa: PLC0415

    _show_trust(rebuild_record(open_ledger(ledger, create=False)), as_json)


def _show_trust(trusted: Any, as_json: bool) -> None:
    if as_json:
        emit_json(trusted.to_json())
        return
    if trusted.required_since is None:
        render.console.print(
            f"no trusted operator keys at position {trusted.as_of}: signatures are not required"
        )
        return
    render.console.print(
        f"at position {trusted.as_of}: operator events must be signed (trust in the log since "
        f"position {trusted.required_since}), by:"
    )
    for key in trusted.keys:
        by = f", by {key.actor}" if key.actor else ""
        render.console.print(f"  {key.key}  (trusted at {key.since}{by})")
    if not trusted.keys:
        render.console.print("  no key: every trusted key was revoked")
    for name, position in trusted.revoked:
        render.console.print(f"  revoked: {name} (at {position})")


@main.command()
@ledger_options
def repair(ledger: str, as_json: bool) -> None:
    """Rebuild everything derived from the log: the indexes and the stored views.

    The id index (idempotency), the subject index (history) and the stored states, verdicts and
    tracking position are written again from the log. The log itself, its Merkle tree, the
    checkpoints and the settings are left as they are: run it when `verify` names an index or a
    stored view.

    \b
    Example:
      adminchain verify || adminchain repair
    """
    from replay.derived import repair as repair_ledger  # noqa: PLC0415

    done = repair_ledger(open_ledger(ledger, create=False))
    if as_json:
        emit_json({"indexed": done.indexed, "views_at": done.views_at})
    else:
        render.console.print(
            f"rebuilt the indexes of {done.indexed} events and the stored views up to position "
            f"{done.views_at}"
        )
