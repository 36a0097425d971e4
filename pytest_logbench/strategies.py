"""Hypothesis strategies for log semantics: records, batches, topic names, crash plans, frames.

They generate what a producer, a crash or a hostile client can put in front of a broker, in
the shapes the rest of logbench uses: records are ``reference_broker.records.Record``, batches
encode with the broker's own ``build_batch``, request bodies follow the broker's protocol
schema (``request_schema``), so a strategy never drifts from what the code under test speaks.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import crc32c
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from reference_broker.log.store import MAX_TOPIC_NAME_LENGTH
from reference_broker.protocol import (
    SCHEMA_VERSIONS,
    ApiKey,
    ArraySchema,
    Primitive,
    StructSchema,
    encode_request,
    request_schema,
)
from reference_broker.records import Compression, Record, build_batch

# --- settings profiles -----------------------------------------------------------------------

PROFILE_ENV = "LOGBENCH_HYPOTHESIS_PROFILE"
CI_MAX_EXAMPLES = 100
"""``max_examples`` of the ci profile (Hypothesis's own default): the unit ``examples`` scales."""


def register_profiles() -> None:
    """Register the ``ci`` and ``nightly`` profiles and load ``$LOGBENCH_HYPOTHESIS_PROFILE``
    (default ``ci``).

    Both turn off deadlines (a broker restart inside an example takes what it takes: a
    wall-clock limit would fail on a slow CI machine, not on a bug) and print the failing
    example's blob, so a CI failure is reproducible with ``@reproduce_failure`` locally.
    Call it from a ``conftest.py``: Hypothesis's pytest plugin applies ``--hypothesis-profile``
    after conftests are imported, so the option wins over the environment variable.
    """
    base = {
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow],
    }
    settings.register_profile(
        "ci", max_examples=CI_MAX_EXAMPLES, stateful_step_count=30, **base
    )
    settings.register_profile(
        "nightly", max_examples=10 * CI_MAX_EXAMPLES, stateful_step_count=100, **base
    )
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
    return st.builds(Record, st.just(0), timestamps() if timestamp is None else timestamp,
                     keys(), values(), headers())


def compressions() -> SearchStrategy[Compression]:
    """The codecs ``build_batch`` can write here: none and gzip always, lz4 and zstd when their
    packages are installed (snappy never: logbench's codec does not write it)."""
    modules = {Compression.LZ4: "lz4", Compression.ZSTD: "zstandard"}
    usable = [codec for codec in Compression if codec is not Compression.SNAPPY
              and (codec not in modules or importlib.util.find_spec(modules[codec]))]
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
        return build_batch(self.records, base_offset=base_offset,
                           timestamps=[r.timestamp for r in self.records],
                           compression=self.compression)

    def at(self, base_offset: int) -> list[Record]:
        """The records as a fetch must return them once the batch got ``base_offset``."""
        return [Record(base_offset + r.offset, r.timestamp, r.key, r.value, list(r.headers))
                for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


@st.composite
def batches(draw: st.DrawFn, max_records: int = 6,
            compression: SearchStrategy[Compression] | None = None) -> BatchSpec:
    """A batch of 1..``max_records`` records with timestamps near each other (as a producer's
    are), sometimes out of order, sometimes far apart (which rolls a segment on ``segment.ms``)."""
    base = draw(timestamps())
    near = st.integers(-5_000, 5_000).map(lambda d: min(max(base + d, 0), MAX_TIMESTAMP))
    drawn = draw(st.lists(records(near | timestamps()), min_size=1, max_size=max_records))
    numbered = tuple(Record(i, r.timestamp, r.key, r.value, r.headers)
                     for i, r in enumerate(drawn))
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
    bad_char = st.sampled_from("/\\ :*?\"<>|\x00\n+=@#é日") | st.characters(
        blacklist_characters=_TOPIC_CHARS, blacklist_categories=("Cs",)
    )
    with_bad_char = st.tuples(st.text(_TOPIC_CHARS, max_size=20), bad_char,
                              st.text(_TOPIC_CHARS, max_size=20)).map("".join)
    too_long = st.text(_TOPIC_CHARS, min_size=MAX_TOPIC_NAME_LENGTH + 1,
                       max_size=MAX_TOPIC_NAME_LENGTH + 40)
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
            file.write(self.payload if self.kind == "garbage"
                       else _corrupted(self.payload, next_offset, self.where))
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
        st.builds(TailDamage, st.just("bad_crc"), where,
                  batches(max_records=3).map(lambda spec: spec.encode())),
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
    round_ = st.builds(CrashRound, st.lists(batches(max_records=3), max_size=max_batches),
                       crashes())
    return st.lists(round_, min_size=1, max_size=max_rounds)


# --- request frames for fuzzing --------------------------------------------------------------

_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}

FUZZ_TOPICS = ("fuzz-a", "fuzz-b")
"""Topic names most fuzzed requests use, so produces and fetches meet existing logs."""


def _small_or_any(bits: int) -> SearchStrategy[int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return st.integers(-2, 10) | st.integers(low, high)


def _mostly(usual: SearchStrategy[Any], other: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``usual`` three draws in four, ``other`` the rest: steers without ruling anything out."""
    return st.sampled_from([usual, usual, usual, other]).flatmap(lambda chosen: chosen)


_SMALL_INT32 = st.integers(-2, 8)
_FUZZ_TOPIC = _mostly(st.sampled_from(FUZZ_TOPICS), topic_names(30) | invalid_topic_names())
_PARTITION = _mostly(st.just(0), _small_or_any(32))

FUZZ_FIELDS: Mapping[str, SearchStrategy[Any]] = {
    # Kafka honours these waits; huge ones would make a fuzzed request wait for days, which
    # tests nothing but patience (a mutated frame can still carry any value).
    "max_wait_ms": st.integers(-1, 50),
    "timeout_ms": st.integers(-1, 50),
    "session_timeout_ms": st.integers(-1, 3000),
    "rebalance_timeout_ms": st.integers(-1, 50),
    # Produce, Fetch, ListOffsets: mostly to the fuzzed topics' one partition, with valid acks,
    # so that broken batches get as far as the append.
    "name": _FUZZ_TOPIC,
    "topic": _FUZZ_TOPIC,
    "index": _PARTITION,
    "partition": _PARTITION,
    "partition_index": _PARTITION,
    "acks": _mostly(st.sampled_from([-1, 0, 1]), _small_or_any(16)),
    # CreateTopics: often creatable on one broker (replication factor -1 or 1, no manual
    # assignment, known configs), with partition counts either small or above the 10,000 per
    # request that Kafka refuses (KAFKA-17870).
    "topics.num_partitions": _SMALL_INT32 | st.sampled_from([10_001, 2**31 - 1]),
    "topics.replication_factor": _mostly(st.sampled_from([-1, 1]), _small_or_any(16)),
    "topics.assignments": st.just([]) | st.lists(st.fixed_dictionaries(
        {"partition_index": _SMALL_INT32, "broker_ids": st.lists(_SMALL_INT32, max_size=2)}),
        min_size=1, max_size=2),
    "topics.configs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["retention.ms", "segment.bytes", "cleanup.policy", "bogus"]),
        "value": st.none() | st.sampled_from(["-1", "0", "1024", "delete", "compact", "x"]),
    }), max_size=2),
}
"""Overrides that steer schema-derived fuzz bodies to the broker's logic instead of its first
validation: by field name, or by dotted path (``topics.configs``) where names are ambiguous."""


def record_payloads() -> SearchStrategy[bytes | None]:
    """``records`` field contents: null, valid batches, batches broken in every way the
    produce-time checks look for (CRC, magic, length, counts, codec, control bit), junk."""
    valid = st.lists(batches(max_records=3), min_size=1, max_size=2).map(
        lambda specs: b"".join(spec.encode() for spec in specs))
    return st.one_of(st.none(), valid, broken_batches(), st.binary(max_size=200))


@st.composite
def broken_batches(draw: st.DrawFn) -> bytes:
    """A batch that Kafka's produce-time validation must refuse (CORRUPT_MESSAGE,
    INVALID_RECORD, MESSAGE_TOO_LARGE...): one defect, with the CRC recomputed when the defect
    is inside the CRC-covered bytes so that the check after the CRC is the one exercised."""
    data = bytearray(draw(batches(max_records=3)).encode())
    defect = draw(st.sampled_from(["crc_field", "flip", "magic", "length", "count", "delta",
                                   "control", "codec", "truncate"]))
    if defect == "crc_field":
        data[17] ^= 1 + draw(st.integers(0, 254))
    elif defect == "flip":
        data[draw(st.integers(21, len(data) - 1))] ^= 1 + draw(st.integers(0, 254))
    elif defect == "magic":
        data[16] = draw(st.sampled_from([0, 1, 3, 255]))
    elif defect == "length":
        struct.pack_into(">i", data, 8, draw(st.integers(-(2**31), 2**31 - 1)))
    elif defect == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    else:
        if defect == "count":
            struct.pack_into(">i", data, 57, draw(st.integers(-3, 10)))
        elif defect == "delta":
            struct.pack_into(">i", data, 23, draw(st.integers(-3, 10)))
        else:
            bits = 0x20 if defect == "control" else draw(st.integers(5, 7))
            struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | bits)
        struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[21:])))
    return bytes(data)


def request_bodies(api_key: int, version: int,
                   overrides: Mapping[str, SearchStrategy[Any]] = FUZZ_FIELDS
                   ) -> SearchStrategy[dict[str, Any]]:
    """Bodies that encode as the request ``api_key`` v``version``, derived from its schema:
    every field present, integers at their type's limits as often as small, arrays of 0-3,
    ``records`` from ``record_payloads``; ``overrides`` replaces fields by dotted path (array
    levels omitted: ``topics.configs``) or else by name."""
    return _body(request_schema(api_key, version), overrides, "")


def _body(schema: StructSchema, overrides: Mapping[str, SearchStrategy[Any]], path: str
          ) -> SearchStrategy[dict[str, Any]]:
    fields = {}
    for f in schema.fields:
        where = path + f.name
        found = overrides.get(where, overrides.get(f.name))
        fields[f.name] = found if found is not None else _value(f.type, overrides, where + ".")
    return st.fixed_dictionaries(fields)


def _value(type_: Primitive | ArraySchema | StructSchema,
           overrides: Mapping[str, SearchStrategy[Any]], path: str) -> SearchStrategy[Any]:
    if isinstance(type_, StructSchema):
        return _body(type_, overrides, path)
    if isinstance(type_, ArraySchema):
        items = st.lists(_value(type_.element, overrides, path), max_size=3)
        return st.none() | items if type_.nullable else items
    if type_.name in _INT_BITS:
        values: SearchStrategy[Any] = _small_or_any(_INT_BITS[type_.name])
    elif type_.name == "bool":
        values = st.booleans()
    elif type_.name == "string":
        values = st.text(max_size=16) | st.text(min_size=200, max_size=400)
    elif type_.name == "records":
        return record_payloads()
    else:
        values = st.binary(max_size=32)
    return st.none() | values if type_.nullable else values


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """A well-formed request frame (size prefix included) of any key and version the codec
    speaks, its body drawn from ``request_bodies``. Half are Produce or Fetch: the data path,
    where a broken batch must never get into the log."""
    api_key = draw(st.sampled_from([ApiKey.PRODUCE, ApiKey.FETCH])
                   | st.sampled_from(sorted(SCHEMA_VERSIONS)))
    low, high = SCHEMA_VERSIONS[api_key]
    version = draw(st.sampled_from(range(low, high + 1)))  # uniform: integers favour the low end
    body = draw(request_bodies(api_key, version))
    client_id = draw(st.none() | st.text(max_size=12))
    return encode_request(api_key, version, draw(st.integers(0, 2**31 - 1)), client_id, body)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with one mutation: body bytes flipped, cut or extended (size prefix kept
    right or left wrong), an int32 or int16 overwritten with a huge or negative count or
    length, an unknown API key or version, or a size prefix that lies."""
    frame = bytearray(draw(valid_frames()))
    body_start = 14  # size 4, api key 2, version 2, correlation id 4, client id length 2
    mutation = draw(st.sampled_from(["flip", "cut", "extend", "count", "key", "version",
                                     "size"]))
    fix_size = draw(st.booleans())
    if mutation == "flip" and len(frame) > body_start:
        for _ in range(draw(st.integers(1, 4))):
            frame[draw(st.integers(body_start, len(frame) - 1))] ^= 1 + draw(st.integers(0, 254))
    elif mutation == "cut" and len(frame) > body_start:
        del frame[draw(st.integers(body_start, len(frame) - 1)):]
    elif mutation == "extend":
        frame += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "count" and len(frame) >= body_start + 4:
        position = draw(st.integers(body_start, len(frame) - 4))
        huge = draw(st.sampled_from([2**31 - 1, 2**30, 65_536, -2, -1, -(2**31)]))
        if draw(st.booleans()):
            struct.pack_into(">i", frame, position, huge)
        else:
            struct.pack_into(">h", frame, position, max(-(2**15), min(huge, 2**15 - 1)))
    elif mutation == "key":
        unknown = sorted(set(range(64)) - {int(key) for key in SCHEMA_VERSIONS})
        key = draw(st.sampled_from(unknown) | st.integers(64, 2**15 - 1)
                   | st.integers(-(2**15), -1))
        struct.pack_into(">h", frame, 4, key)
    elif mutation == "version":
        struct.pack_into(">h", frame, 6, draw(st.integers(-(2**15), 2**15 - 1)))
    elif mutation == "size":
        fix_size = False
        struct.pack_into(">i", frame, 0, draw(st.integers(-(2**31), 2**31 - 1)
                                              | st.integers(0, len(frame) + 8)))
    if fix_size:
        struct.pack_into(">i", frame, 0, len(frame) - 4)
    return bytes(frame)


def request_frames() -> SearchStrategy[bytes]:
    """Fuzz frames: mostly mutated valid frames, some valid ones (so that state builds up:
    topics, groups, produced batches), some with a random header and body."""
    random_header = st.builds(
        lambda key, version, body: struct.pack(">ihhi", 8 + len(body), key, version, 1) + body,
        st.integers(-(2**15), 2**15 - 1), st.integers(-(2**15), 2**15 - 1),
        st.binary(max_size=64),
    )
    return st.one_of(mutated_frames(), valid_frames(), random_header)

