"""Hypothesis strategies for log semantics: records, batches, topic names, crash plans.

They generate what a producer, a crash or a hostile client can put in front of a broker, in
the shapes the rest of logbench uses: records are ``reference_broker.records.Record``, batches
encode with the broker's own ``build_batch``, request bodies follow the broker's protocol
schema (``request_schema``; the fuzzing frames are in ``fuzz.py``), so a strategy never
drifts from what the code under test speaks.

Settings profiles: ``register_profiles()`` registers ``ci`` (the default, sized for the CI
time budget) and ``nightly`` (ten times the examples, longer state machine runs) and loads the
one named by ``$LOGBENCH_HYPOTHESIS_PROFILE``; Hypothesis's ``--hypothesis-profile`` option
overrides it. Tests state their example count for CI with ``examples(n)``, which scales with
the loaded profile, so ``nightly`` multiplies every count without editing a test.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from reference_broker.log.store import MAX_TOPIC_NAME_LENGTH
from reference_broker.record_codec import build_batch
from reference_broker.records import Compression, Record

# --- settings profiles -----------------------------------------------------------------------

PROFILE_ENV = "LOGBENCH_HYPOTHESIS_PROFILE"
CI_MAX_EXAMPLES = 100
"""``max_examples`` of the ci profile (Hypothesis's own default): the unit ``examples`` scales."""


def register_profiles(*, load: bool = True) -> None:
    """Register the ``ci`` and ``nightly`` profiles and load ``$LOGBENCH_HYPOTHESIS_PROFILE``
    (default ``ci``; with ``load=False`` only when the variable is set: the plugin registers
    the profiles in every project without changing its Hypothesis defaults).

    Both turn off deadlines (a broker restart inside an example takes what it takes: a
    wall-clock limit would fail on a slow CI machine, not on a bug) and print the failing
    example's blob, so a CI failure is reproducible with ``@reproduce_failure`` locally.
    The plugin calls it before Hypothesis's own plugin applies ``--hypothesis-profile``, so
    ``--hypothesis-profile=nightly`` works in any project and wins over the variable.
    """
    base = {
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow],
    }
    settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, stateful_step_count=30, **base)
    settings.register_profile(
        "nightly", max_examples=10 * CI_MAX_EXAMPLES, stateful_step_count=100, **base
    )
    if load or PROFILE_ENV in os.environ:
        settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


def examples(ci_count: int, **changes: Any) -> settings:
    """Settings for a test that runs ``ci_count`` examples under the ci profile.

    Other profiles scale the count by their ``max_examples`` relative to ci's, so a test says
    what CI needs once and ``nightly`` runs ten times as many. Settings are built at import,
    after the profile is loaded, so they inherit its other values.
    """
    scaled = max(1, ci_count * settings.default.max_examples // CI_MAX_EXAMPLES)
    return settings(max_examples=scaled, **changes)


def shrink_timeout() -> pytest.MarkDecorator:
    """A pytest-timeout mark for tests whose examples drive a broker: 15 minutes under ci,
    scaled like ``examples``. Hypothesis may spend five minutes shrinking a failure, and the
    suite's shorter default would end the test before it prints the minimal example and its
    blob; passing runs take a fraction of it."""
    return pytest.mark.timeout(900 * max(1, settings.default.max_examples // CI_MAX_EXAMPLES))


# --- records and batches ---------------------------------------------------------------------

MAX_TIMESTAMP = 1_700_000_000_000
"""2023-11-14: a ceiling in the past, since Kafka 4 refuses timestamps more than an hour ahead
of its clock (``message.timestamp.after.max.ms``)."""


def keys() -> SearchStrategy[bytes | None]:
    """Record keys: null, empty, short, and occasionally a few hundred bytes."""
    return st.none() | st.binary(max_size=16) | st.binary(min_size=100, max_size=300)


def values(max_size: int = 256) -> SearchStrategy[bytes | None]:
    """Record values, null (a tombstone) included; mostly small so that many fit a segment."""
    return st.none() | st.binary(max_size=min(max_size, 32)) | st.binary(max_size=max_size)


def headers() -> SearchStrategy[list[tuple[str, bytes | None]]]:
    """Record headers: UTF-8 keys (repeats allowed, as in Kafka), nullable values."""
    pair = st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=24))
    return st.lists(pair, max_size=3)


def timestamps() -> SearchStrategy[int]:
    """CreateTime timestamps in milliseconds, from the epoch to ``MAX_TIMESTAMP``."""
    return st.integers(min_value=0, max_value=MAX_TIMESTAMP)


def records(timestamp: SearchStrategy[int] | None = None) -> SearchStrategy[Record]:
    """One record; its ``offset`` is 0 (a batch spec renumbers them as deltas)."""
    return st.builds(
        Record,
        st.just(0),
        timestamps() if timestamp is None else timestamp,
        keys(),
        values(),
        headers(),
    )


def compressions() -> SearchStrategy[Compression]:
    """The codecs ``build_batch`` can write here: none and gzip always, lz4 and zstd when their
    packages are installed (snappy never: logbench's codec does not write it)."""
    modules = {Compression.LZ4: "lz4", Compression.ZSTD: "zstandard"}
    usable = [
        codec
        for codec in Compression
        if codec is not Compression.SNAPPY
        and (codec not in modules or importlib.util.find_spec(modules[codec]))
    ]
    return st.sampled_from(usable)


@dataclass(frozen=True)
class BatchSpec:
    """Records to produce as one v2 batch: ``records[i].offset`` is the offset delta ``i``.

    A spec, not bytes: the model of a log compares what a fetch returns with ``at(base)``,
    record by record, which also holds against brokers that re-encode batches.
    """

    records: tuple[Record, ...]
    compression: Compression = Compression.NONE

    def encode(self, base_offset: int = 0) -> bytes:
        """The CRC'd batch as a producer sends it (base offset 0 unless given)."""
        return build_batch(
            self.records,
            base_offset=base_offset,
            timestamps=[r.timestamp for r in self.records],
            compression=self.compression,
        )

    def at(self, base_offset: int) -> list[Record]:
        """The records as a fetch must return them once the batch got ``base_offset``."""
        return [
            Record(base_offset + r.offset, r.timestamp, r.key, r.value, list(r.headers))
            for r in self.records
        ]

    def __len__(self) -> int:
        return len(self.records)


@st.composite
def batches(
    draw: st.DrawFn, max_records: int = 6, compression: SearchStrategy[Compression] | None = None
) -> BatchSpec:
    """A batch of 1..``max_records`` records with timestamps near each other (as a producer's
    are), sometimes out of order, sometimes far apart (which rolls a segment on ``segment.ms``)."""
    base = draw(timestamps())
    near = st.integers(-5_000, 5_000).map(lambda d: min(max(base + d, 0), MAX_TIMESTAMP))
    drawn = draw(st.lists(records(near | timestamps()), min_size=1, max_size=max_records))
    numbered = tuple(Record(i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(drawn))
    return BatchSpec(numbered, draw(compressions() if compression is None else compression))


def batch_of_size(size: int, timestamp: int = 0) -> BatchSpec:
    """An uncompressed one-record batch of exactly ``size`` bytes, to put a produce request
    right at a limit such as ``segment.bytes``; ValueError if no such batch exists."""
    length = size - len(BatchSpec((Record(0, timestamp, None, b"", []),)).encode())
    while length >= 0:  # the value's varint length grows with it: shrink until the total fits
        spec = BatchSpec((Record(0, timestamp, None, b"v" * length, []),))
        excess = len(spec.encode()) - size
        if excess <= 0:
            if excess == 0:
                return spec
            break
        length -= excess
    raise ValueError(f"no one-record batch is exactly {size} bytes")


# --- topic names -----------------------------------------------------------------------------

_TOPIC_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def topic_names(max_size: int = MAX_TOPIC_NAME_LENGTH) -> SearchStrategy[str]:
    """Names Kafka accepts: 1-249 characters of [a-zA-Z0-9._-], other than "." and ".."."""
    return st.text(_TOPIC_CHARS, min_size=1, max_size=max_size).filter(
        lambda name: name not in (".", "..")
    )


def invalid_topic_names() -> SearchStrategy[str]:
    """Names Kafka refuses (INVALID_TOPIC_EXCEPTION): empty, "." and "..", too long, or with a
    character outside [a-zA-Z0-9._-] (path separators and non-ASCII letters included)."""
    bad_char = st.sampled_from('/\\ :*?"<>|\x00\n+=@#é日') | st.characters(
        blacklist_characters=_TOPIC_CHARS, blacklist_categories=("Cs",)
    )
    with_bad_char = st.tuples(
        st.text(_TOPIC_CHARS, max_size=20), bad_char, st.text(_TOPIC_CHARS, max_size=20)
    ).map("".join)
    too_long = st.text(
        _TOPIC_CHARS, min_size=MAX_TOPIC_NAME_LENGTH + 1, max_size=MAX_TOPIC_NAME_LENGTH + 40
    )
    return st.sampled_from(["", ".", ".."]) | with_bad_char | too_long


# --- crash plans: produce, SIGKILL, damage the tail, restart ---------------------------------

PAGE_SIZE = 4096


@dataclass(frozen=True)
class TailDamage:
    """What a power loss or a torn write can leave at the end of a segment file.

    ``truncate``: the file ends early (at any byte, typically inside a batch). ``garbage``:
    bytes the log never wrote follow its end (``payload``; zeros model an extended file whose
    blocks were never written). ``zero_page``: a page's worth of the tail reads back as zeros.
    ``bad_crc``: a whole, well-framed batch whose bytes do not match its CRC-32C follows the end.
    ``where`` picks the byte (modulo the size of the damageable window).
    """

    kind: Literal["truncate", "garbage", "zero_page", "bad_crc"]
    where: int = 0
    payload: bytes = b""

    def apply(self, path: Path, lowest: int = 0, next_offset: int = 0) -> int:
        """Damage ``path`` at or after byte ``lowest``; return the first byte whose content
        changed (the file size if none did). ``next_offset`` is the base offset a ``bad_crc``
        batch claims, so recovery cannot reject it on its offset alone."""
        data = path.read_bytes()
        size = len(data)
        lowest = min(lowest, size)
        at = lowest + self.where % (size - lowest + 1)
        if self.kind == "truncate":
            os.truncate(path, at)
            return at
        if self.kind == "zero_page":
            start = max(lowest, at - at % PAGE_SIZE)
            end = min(size, start + PAGE_SIZE - start % PAGE_SIZE)
            with path.open("r+b") as file:
                file.seek(start)
                file.write(bytes(end - start))
            changed = [i for i in range(start, end) if data[i]]
            return changed[0] if changed else size
        with path.open("ab") as file:
            file.write(
                self.payload
                if self.kind == "garbage"
                else _corrupted(self.payload, next_offset, self.where)
            )
        return size


def _corrupted(batch: bytes, base_offset: int, where: int) -> bytes:
    """``batch`` with base offset ``base_offset`` and one CRC-covered byte flipped."""
    data = bytearray(batch)
    struct.pack_into(">q", data, 0, base_offset)
    data[21 + where % (len(data) - 21)] ^= 0xFF
    return bytes(data)


def tail_damages() -> SearchStrategy[TailDamage]:
    """Truncations, appended garbage (random bytes or zeros), zeroed pages and bad-CRC batches."""
    where = st.integers(0, 2**16)
    junk = st.binary(min_size=1, max_size=300) | st.integers(1, 2 * PAGE_SIZE).map(bytes)
    return st.one_of(
        st.builds(TailDamage, st.just("truncate"), where),
        st.builds(TailDamage, st.just("garbage"), where, junk),
        st.builds(TailDamage, st.just("zero_page"), where),
        st.builds(
            TailDamage,
            st.just("bad_crc"),
            where,
            batches(max_records=3).map(lambda spec: spec.encode()),
        ),
    )


@dataclass(frozen=True)
class Crash:
    """A SIGKILL ``pause_us`` microseconds after ``stream`` started to be produced, one
    request after the other, from another thread: before it, between its requests, or in
    the middle of one (received, appended, answered or not); then ``damage`` (if any) to the
    active segment's tail while the broker is down."""

    stream: list[BatchSpec]
    pause_us: int
    damage: TailDamage | None


def crashes() -> SearchStrategy[Crash]:
    """Kill points at every stage of a produce, each with or without tail damage."""
    return st.builds(
        Crash,
        st.lists(batches(max_records=3), max_size=4),
        st.sampled_from([0, 0, 100, 500, 2_000, 10_000]),
        st.none() | tail_damages(),
    )


@dataclass(frozen=True)
class CrashRound:
    """Produce ``produced`` (each acknowledged before the next is sent), then ``crash``."""

    produced: list[BatchSpec]
    crash: Crash


def crash_plans(max_rounds: int = 3, max_batches: int = 8) -> SearchStrategy[list[CrashRound]]:
    """Sequences of operations for crash recovery: rounds of acknowledged produces, each ended
    by a kill point; recovering a log that an earlier crash already truncated is part of it."""
    round_ = st.builds(
        CrashRound, st.lists(batches(max_records=3), max_size=max_batches), crashes()
    )
    return st.lists(round_, min_size=1, max_size=max_rounds)
