"""The error a Kafka broker answers with, as the harness clients raise it."""

from __future__ import annotations

from reference_broker.errors import ErrorCode


class KafkaError(Exception):
    """A broker answered with an error code."""

    def __init__(self, code: int, where: str, message: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.where, self.detail = where, message
        detail = f": {message}" if message else ""
        super().__init__(f"{where}: {self.code.name} ({code}){detail}")

    def __reduce__(self) -> tuple[type, tuple[int, str, str | None]]:
        # Members in other processes send their errors back pickled.
        return KafkaError, (int(self.code), self.where, self.detail)
