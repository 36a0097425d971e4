"""What the coordinator reads of the consumer protocol embedded in group membership.

Members of a group with protocol type "consumer" send a ConsumerProtocolSubscription as the
metadata of each assignor they offer (Kafka's ``ConsumerProtocolSubscription.json``): an int16
version, then the subscribed topics as an int32 count of int16-length UTF-8 strings; later
fields (user data, owned partitions, rack) do not matter here. The coordinator reads it only
to refuse deleting the offsets of topics a live consumer group subscribes to.
"""

import struct

CONSUMER_PROTOCOL_TYPE = "consumer"

_HEAD = struct.Struct(">hi")  # version, topic count
_LENGTH = struct.Struct(">h")


def subscribed_topics(metadata: bytes) -> frozenset[str] | None:
    """The topics a subscription names, or None if the bytes are not a subscription (the
    caller then assumes the worst: the member may subscribe to anything)."""
    try:
        _, count = _HEAD.unpack_from(metadata, 0)
        pos = _HEAD.size
        topics = []
        for _ in range(count):
            (length,) = _LENGTH.unpack_from(metadata, pos)
            pos += _LENGTH.size
            if length < 0 or pos + length > len(metadata):
                return None
            topics.append(metadata[pos : pos + length].decode())
            pos += length
    except (struct.error, UnicodeDecodeError):
        return None
    return frozenset(topics)
