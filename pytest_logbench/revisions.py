"""The reference broker as it was at a git revision, run beside the current one in every round.

A gate that compares a run with figures saved earlier compares two moments of a shared machine
as much as two versions of the code: with both cores busy, an unchanged broker read as a
regression in every run, and a raw-syscall control did not excuse it, since contention slows
the Python broker more than bare syscalls (docs/performance.md). The broker of the baseline
revision suffers load exactly as the current one does. ``--logbench-compare-ref=REV`` starts
it, with the options the test asked for, and measures every workload that can be aimed at
another broker (``workload.against(broker)``) on both, in alternating parts of each round: the
per-round ratio then measures the code, whatever the machine was doing.

The revision's ``reference_broker`` package comes from the git checkout that holds the
installed one (``git archive``), kept under logbench's cache directory by commit.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_logbench.brokers import BrokerOptions, ReferenceBroker, user_cache_dir

if TYPE_CHECKING:
    from pytest_logbench.contract import Broker
    from pytest_logbench.workloads import Workload


PACKAGE = "reference_broker"  # its path in logbench's repository


class RevisionError(ValueError):
    """A revision that cannot be run: not a commit, not a git checkout, no broker in it."""


@dataclass(frozen=True)
class BrokerCode:
    """A revision's ``reference_broker`` package: ``directory`` holds it (it goes first on the
    broker's import path)."""

    commit: str
    directory: Path


def broker_code(revision: str, repository: Path | None = None) -> BrokerCode:
    """The reference broker's code at ``revision`` of ``repository`` (default: the checkout
    holding the imported ``reference_broker``), extracted once per commit."""
    repository = repository or _installed_package().parent
    toplevel = Path(_git(repository, "rev-parse", "--show-toplevel"))
    commit = _git(
        toplevel, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
    )
    directory = user_cache_dir() / "revisions" / commit
    if not (directory / PACKAGE / "__main__.py").is_file():
        _extract(toplevel, commit, directory)
    return BrokerCode(commit, directory)


def _installed_package() -> Path:
    import reference_broker

    return Path(reference_broker.__file__).resolve().parent


def _git(directory: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise RevisionError("git is not installed; a reference revision needs it") from None
    if done.returncode != 0:
        if args[0] == "rev-parse" and "--verify" in args:
            raise RevisionError(
                f"{args[-1].removesuffix('^{commit}')!r} is not a commit in {directory}"
            )
        raise RevisionError(
            f"{directory} is not a git checkout (git {args[0]}: {done.stderr.strip()}); a "
            "reference revision needs logbench installed from a git checkout (pip install -e)"
        )
    return done.stdout.strip()


def _extract(toplevel: Path, commit: str, directory: Path) -> None:
    """``git archive`` the package into ``directory``, atomically: concurrent sessions (xdist
    workers, parallel CI jobs) may extract the same commit at once."""
    archive = subprocess.run(
        ["git", "-C", str(toplevel), "archive", "--format=tar", commit, "--", PACKAGE],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RevisionError(
            f"commit {commit[:12]} has no {PACKAGE}/: {archive.stderr.decode(errors='replace')}"
        )
    partial = directory.with_name(f"{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(partial, filter="data")
    if not (partial / PACKAGE / "__main__.py").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise RevisionError(f"commit {commit[:12]} has no reference broker in {PACKAGE}/")
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(directory)
    except OSError:  # another session extracted it first
        shutil.rmtree(partial, ignore_errors=True)


@dataclass
class ReferenceTwins:
    """The brokers of one revision, one per set of options a test asked for, started on first
    use and stopped by ``close`` (the session's end); and the workloads' twins on them.

    The fixtures report each broker they launch with the options the test asked for
    (``launched``): a project's launch hook is part of the code under test, so the revision's
    broker never goes through it."""

    code: BrokerCode
    work_dir: Path
    _asked: dict[int, tuple[Broker, BrokerOptions]] = field(default_factory=dict)
    _brokers: dict[tuple[Any, ...], ReferenceBroker] = field(default_factory=dict)

    @property
    def commit(self) -> str:
        return self.code.commit

    def launched(self, broker: Broker, options: BrokerOptions) -> None:
        self._asked[id(broker)] = (broker, options)

    def twin(self, workload: Workload) -> Workload | None:
        """``workload`` aimed at this revision's broker with the same options; None where the
        workload cannot be aimed elsewhere or its broker is not a plain reference broker
        (Kafka, an external cluster, a memory budget or disk profile this cannot share)."""
        against = getattr(workload, "against", None)
        broker, options = self._asked.get(id(workload.broker), (None, None))
        if against is None or broker is not workload.broker or options is None:
            return None
        if options.kind != "reference" or options.memory_limit_bytes or options.disk:
            return None
        return against(self._broker(options))

    def _broker(self, options: BrokerOptions) -> ReferenceBroker:
        key = (options.tls, tuple(options.command_args()))
        if key not in self._brokers:
            broker = ReferenceBroker(
                self.work_dir / f"revision-broker{len(self._brokers)}",
                options,
                work_dir=self.work_dir,
                code=self.code.directory,
                revision=self.code.commit,
            )
            self._brokers[key] = broker.start()
        return self._brokers[key]

    def close(self) -> None:
        for broker in self._brokers.values():
            broker.stop()
        self._brokers.clear()
        self._asked.clear()
