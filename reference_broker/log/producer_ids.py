"""Producer ids that never repeat, across restarts too.

A producer id names one producer instance to every partition's duplicate detection: handing the
same id to two producers would make one's batches look like the other's retries. Like Kafka's
ProducerIdManager, ids are taken from blocks whose end is saved before any id of the block is
handed out, so a crash can skip ids but never repeat one.
"""

from pathlib import Path

from reference_broker.log.errors import KafkaStorageError
from reference_broker.log.files import replace_file

PRODUCER_ID_BLOCK_FILE = "producer-id-block"
BLOCK_SIZE = 1000


class ProducerIds:
    """Allocates producer ids above every id the saved block or the logs have seen."""

    def __init__(self, path: Path, at_least: int) -> None:
        """``at_least``: one past the largest producer id found in the logs, in case the block
        file was lost."""
        self.path = path
        try:
            saved = int(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = 0
        self._next = self._end = max(saved, at_least)

    def allocate(self) -> int:
        """The next id; saving a new block first when the current one is used up."""
        if self._next >= self._end:
            self._save(self._next + BLOCK_SIZE)
        allocated = self._next
        self._next += 1
        return allocated

    def _save(self, end: int) -> None:
        try:
            replace_file(self.path, f"{end}\n", fsync=True)
        except OSError as exc:
            raise KafkaStorageError(f"cannot save the producer id block: {exc}") from exc
        self._end = end
