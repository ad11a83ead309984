"""One send's record in the store, kept in step with the router.

The record and its first attempt are written in one transaction just before the first provider
call; each further attempt (with how the previous one ended) before its call; the final status
(with how the last attempt ended, and the numbers a provider refused) after. Two writes for a
send that the first provider takes, each shared with concurrent sends by the group commit.
"""

from __future__ import annotations

from gateway.router import Attempt, Outcome
from gateway.store import AttemptEnd, NewMessage
from gateway.store.records import ID_WIDTH, RecordStore

# The router's verdict -> the record's final status ("unavailable": nothing was sent).
_FINAL = {"sent": "sent", "unknown": "unknown", "rejected": "rejected",
          "rate_limited": "rate_limited", "failed": "failed", "unavailable": "failed"}


class Recorder:
    """The router's journal for one message (see :class:`gateway.router.Journal`)."""

    def __init__(self, records: RecordStore, new: NewMessage, *, keep_params: bool,
                 created: bool = False) -> None:
        self._records = records
        self._new = new
        self._keep_params = keep_params
        self._created = created  # an outbox message's record exists since it was queued
        self._seq: int | None = None  # the attempt in progress
        self._ended: AttemptEnd | None = None  # how it ended, written with the next step

    @property
    def called(self) -> bool:
        """Whether any provider call was recorded (and so may have been made)."""
        return self._seq is not None

    async def before(self, provider: str) -> None:
        """Record the attempt about to be made; a StoreError means it must not be made."""
        if not self._created:
            self._seq = await self._records.create(self._new, provider)
            self._created = True
        else:
            self._seq = await self._records.attempt_started(self._new.id, provider, self._ended)
        self._ended = None

    @property
    def ended(self) -> AttemptEnd | None:
        """How the last attempt ended, not yet written (the outbox writes it with a put-back)."""
        return self._ended

    def after(self, attempt: Attempt) -> None:
        if self._seq is not None:
            self._ended = AttemptEnd(self._seq, attempt.outcome, attempt.error or None)

    async def finish(self, outcome: Outcome, refused: dict[str, str]) -> None:
        """The final status; ``refused``: our number -> the provider's code for it."""
        if not self._created:  # no provider was tried: the record is written now
            await self._records.create(self._new)
            self._created = True
        last = self._ended
        stored = _fit(outcome.provider_message_id)
        if last is not None and stored and outcome.state == "sent":
            last = AttemptEnd(last.seq, last.outcome, last.error, stored)
        await self._records.finish(
            self._new.id, _FINAL.get(outcome.state, "unknown"), provider=outcome.provider,
            provider_message_id=stored, error=outcome.reason or None,
            keep_params=self._keep_params, last=last, refused=refused,
            recipient_ids=self._recipient_ids(outcome) if outcome.state == "sent" else None)

    def _recipient_ids(self, outcome: Outcome) -> dict[str, str]:
        """Our number -> the provider's id for it, for receipts: the per-recipient ids where
        the provider gives them (matched by digits: ``8613...`` is our ``+8613...``), else the
        message's one id (Aliyun's BizId) for every number."""
        ours = {number.lstrip("+"): number for number in self._new.numbers}
        if outcome.recipient_ids:
            return {ours[n.lstrip("+")]: one for n, one in outcome.recipient_ids
                    if n.lstrip("+") in ours}
        if outcome.provider_message_id:
            return dict.fromkeys(ours.values(), outcome.provider_message_id)
        return {}


def _fit(ids: str | None) -> str | None:
    """A message's provider id as stored: a long batch's joined ids (Huawei's, one per number)
    cut after the last whole id that fits, marked with ``,...``; each recipient keeps its own."""
    if ids is None or len(ids) <= ID_WIDTH:
        return ids
    cut = ids.rfind(",", 0, ID_WIDTH - 3)
    return (ids[:cut] if cut > 0 else ids[:ID_WIDTH - 4]) + ",..."
