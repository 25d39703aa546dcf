"""Periodic signed checkpoints from `adminchain serve --checkpoint-key` (SPEC-server §9).

A thread that, every ``--checkpoint-every`` (default 10 s) while the log grows, makes a
checkpoint of what the projections have folded (projection digest line included), signs it and,
with ``--witness``, has it cosigned: it is stored (and so served at ``/checkpoint``) only with
``--quorum`` cosignatures. A refusal is logged and tried again at the next tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from adminchain.server.access import log_event
from ledger.errors import LedgerError
from ledger.notes import Checkpoint, Signer

__all__ = ["Publisher", "publisher_from"]


class Publisher:
    """Publishes checkpoints of `server`'s ledger every `every` seconds while it grows."""

    def __init__(
        self,
        signer: Signer,
        every: float,
        witnesses: Sequence[Any] = (),
        quorum: int | None = None,
    ) -> None:
        self.signer = signer
        self.every = every
        self.witnesses = list(witnesses)
        self.quorum = len(self.witnesses) if quorum is None else quorum
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def start(self, server: Any) -> Callable[[], None]:
        """Start publishing for `server` (an `adminchain.server.app.Server`); returns `stop`."""
        self._thread = threading.Thread(
            target=self._run, args=(server,), name="ac-publish", daemon=True
        )
        self._thread.start()
        return self.stop

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self, server: Any) -> None:
        while not self._stop.is_set():
            try:
                self.tick(server)
            except (LedgerError, OSError) as e:
                log_event(event="checkpoint_failed", error=str(e))
            self._stop.wait(self.every)

    def tick(self, server: Any) -> Checkpoint | None:
        """Publish one checkpoint if the folded log is beyond the last one stored."""
        from replay.integrity import make_checkpoint  # noqa: PLC0415

        notes = server.ledger.checkpoints()
        tracking = server.hub.tracking
        if tracking == 0 or (notes and notes[-1][0] >= tracking):
            return None  # an empty log, or no growth since the last checkpoint
        checkpoint, _ = make_checkpoint(server.views, self.signer, self._publish(server))
        server.last_checkpoint = time.monotonic()
        self.published += 1
        log_event(event="checkpoint", size=checkpoint.size, root=checkpoint.root.hex())
        return checkpoint

    def _publish(self, server: Any) -> Callable[[Checkpoint, str], str] | None:
        if not self.witnesses:
            return None
        from ledger.witness import publish_checkpoint  # noqa: PLC0415

        def publish(checkpoint: Checkpoint, note: str) -> str:
            return publish_checkpoint(
                server.ledger, note, checkpoint.size, self.witnesses, self.quorum
            )

        return publish


def publisher_from(
    key_path: str | None, every: str, witness_urls: Sequence[str], quorum: int | None
) -> Publisher | None:
    """The publisher `serve`'s options ask for (None without --checkpoint-key)."""
    from adminchain.cli import parse_duration  # noqa: PLC0415
    from adminchain.commands_audit import signer_from  # noqa: PLC0415
    from ledger.errors import UsageError  # noqa: PLC0415
    from ledger.witness import WitnessEndpoint  # noqa: PLC0415

    period = parse_duration(every)
    if period is None or period.total_seconds() <= 0:
        raise UsageError(f"--checkpoint-every: {every!r} is not a duration (e.g. 10s)")
    if key_path is None:
        if witness_urls or quorum is not None:
            raise UsageError("--witness and --quorum need --checkpoint-key")
        return None
    witnesses = [WitnessEndpoint.parse(w) for w in witness_urls]
    if quorum is not None and not witnesses:
        raise UsageError("--quorum needs --witness")
    if witnesses and not 1 <= (quorum or len(witnesses)) <= len(witnesses):
        raise UsageError(f"--quorum {quorum} must be from 1 to the {len(witnesses)} witness(es)")
    return Publisher(signer_from(key_path), period.total_seconds(), witnesses, quorum)
