"""The compact set behind deduplication: it agrees with a Python set, in a fraction of the memory."""

from __future__ import annotations

import os
import random
from hashlib import blake2b

from mailtrain_operator.recipients.seen import SeenAddresses, digest

SEED = int(os.environ.get("RECIPIENTS_SEED") or random.SystemRandom().getrandbits(40))


def test_it_answers_like_a_python_set_through_every_growth() -> None:
    print(f"seed {SEED}: RECIPIENTS_SEED={SEED} repeats this run")
    rng = random.Random(SEED)
    seen, reference = SeenAddresses(), set()
    for _ in range(120_000):
        # Keys drawn from a range smaller than the draws: about a third come again.
        key = f"user{rng.randrange(80_000)}@example.org"
        assert seen.add(key) == (key not in reference), f"seed {SEED}: {key}"
        reference.add(key)
    assert len(seen) == len(reference)


def test_memory_per_address_stays_small() -> None:
    seen = SeenAddresses()
    for i in range(200_000):
        seen.add(f"reader{i}@example.org")
    # A Python set of the same digests takes about 80 bytes an address.
    assert seen.nbytes <= 22 * len(seen), seen.nbytes / len(seen)


def test_the_digest_is_the_same_in_every_process() -> None:
    """A list read again (by a restarted operator) must drop the same rows as duplicates."""
    assert digest("a@example.org") == 0x64DB97BBBD45F1AD  # BLAKE2b-64, unkeyed, little-endian
    assert digest("a@example.org") == int.from_bytes(
        blake2b(b"a@example.org", digest_size=8).digest(), "little"
    )
