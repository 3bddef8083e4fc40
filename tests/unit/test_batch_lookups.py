"""The lookup stage's batches (client/lookup.py), against a stand-in for the API client: one
request per object until the service has answered, then batches; none where none are
offered; one by one again when an offered batch is not answered as one; and the rest asked
again, still by batch, when a server answers only the first of a batch."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Optional

import pytest

from pyscore.client.api import NotOffered
from pyscore.client.errors import NotFoundError
from pyscore.client.lookup import PROBES, Lookups
from pyscore.wire.score import ObjectSpecification

URL = "http://api.invalid"


class FakeApi:
    """Counts calls; `offer` is what the first answer says (None: no batches); `answers` is
    how many of a batch an answer holds at most (a server's full answer)."""

    def __init__(
        self, offer: Optional[int], batch_works: bool = True, answers: Optional[int] = None
    ) -> None:
        self.settings = SimpleNamespace(storage_url=URL, metadata_url=URL)
        self.offer, self.batch_works, self.answers = offer, batch_works, answers
        self.learned: dict[str, Optional[int]] = {}
        self.singles = 0
        self.batches: list[int] = []
        self.lock = threading.Lock()
        # a batch is answered once every lookup has been asked, as over a real link, where
        # lookups pile up behind a batch in flight (answered at once, a busy machine's asker
        # would see each answer before its next ask, and send batches of one)
        self.all_asked = threading.Event()

    def batch_offer(self, base: str) -> tuple[bool, Optional[int]]:
        with self.lock:
            return base in self.learned, self.learned.get(base)

    def no_batches(self, base: str) -> None:
        with self.lock:
            self.learned[base] = None

    @staticmethod
    def spec_of(object_id: str) -> ObjectSpecification:
        if object_id.startswith("missing"):
            raise NotFoundError(f"object {object_id}: not found")
        return ObjectSpecification(f"data/{object_id}", object_id, object_id, [], 1)

    def download_spec(self, object_id: str, offset: int, length: int) -> ObjectSpecification:
        with self.lock:
            self.singles += 1
            self.learned.setdefault(URL, self.offer)  # the answer carries (or not) the header
        return self.spec_of(object_id)

    def entity(self, object_id: str) -> None:
        raise AssertionError("no entity is asked here")

    entities_batch = entity

    def download_specs(self, wanted):
        with self.lock:
            self.batches.append(len(wanted))
        self.all_asked.wait(30)
        if not self.batch_works:
            raise NotOffered("404")
        out = []
        for object_id, _, _ in wanted[: self.answers]:
            try:
                out.append(self.spec_of(object_id))
            except NotFoundError as exc:
                out.append(exc)
        return out


def ask_all(api: FakeApi, ids: list[str]) -> dict[str, object]:
    lookups = Lookups(api)  # type: ignore[arg-type]
    try:
        futures = {i: lookups.spec(i) for i in ids}
        api.all_asked.set()
        out: dict[str, object] = {}
        for i, f in futures.items():
            try:
                out[i] = f.result(timeout=30).objectId
            except NotFoundError as exc:
                out[i] = exc
        return out
    finally:
        lookups.close()


IDS = [f"obj{i}" for i in range(300)] + ["missing-1"]


@pytest.mark.parametrize(
    "offer, works, most_singles",
    [(1000, True, PROBES), (None, True, len(IDS)), (1000, False, len(IDS) + PROBES)],
    ids=["offered", "not offered", "offered but not answered"],
)
def test_every_lookup_is_answered_however_the_server_answers(offer, works, most_singles):
    api = FakeApi(offer, works)
    got = ask_all(api, IDS)
    assert [got[i] for i in IDS[:-1]] == IDS[:-1]
    assert isinstance(got["missing-1"], NotFoundError)
    assert api.singles <= most_singles
    if offer and works:
        assert api.singles <= PROBES and sum(api.batches) + api.singles == len(IDS)
        assert len(api.batches) <= 8 and max(api.batches) <= 200
    if offer is None:
        assert api.batches == [] and api.singles == len(IDS)
    if offer and not works:
        assert len(api.batches) >= 1  # tried once, then one by one
        assert api.singles >= len(IDS) - PROBES


def test_what_a_full_answer_leaves_out_is_asked_again_by_batch():
    api = FakeApi(1000, answers=7)
    got = ask_all(api, IDS)
    assert [got[i] for i in IDS[:-1]] == IDS[:-1]
    assert isinstance(got["missing-1"], NotFoundError)
    assert api.singles <= PROBES
    assert len(api.batches) >= (len(IDS) - PROBES) // 7


class SilentApi(FakeApi):
    """A service whose first answers never come (they wait on `answer`)."""

    def __init__(self) -> None:
        super().__init__(offer=None)
        self.answer = threading.Event()

    def download_spec(self, object_id: str, offset: int, length: int) -> ObjectSpecification:
        self.answer.wait(30)
        return super().download_spec(object_id, offset, length)


def test_closing_stops_whoever_waits_on_a_lookup_that_will_never_be_asked():
    """The run stopped (a wrong setting, Ctrl-C) while lookups were held back until the
    service's first answer: a resolver waiting on one must not wait forever (the process
    could not end), it is told the lookup was cancelled."""
    api = SilentApi()
    lookups = Lookups(api)  # type: ignore[arg-type]
    try:
        futures = [lookups.spec(f"id-{n}") for n in range(PROBES + 2)]  # the last 2 held
        lookups.close()
        held = futures[-1]
        assert held.cancelled(), "a held lookup left pending: its waiter would hang"
    finally:
        api.answer.set()
