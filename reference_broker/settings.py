"""The broker's settings, each defined once: where it is declared, everything else derives.

A setting is a field of ``LogConfig`` or ``BrokerConfig`` declared with ``setting(...)``: its
default and type live in the dataclass, its help text, Kafka config name and whether it needs
this broker's own process live in the field's metadata (Kafka keeps one ``ConfigDef`` per
component the same way). From that one declaration come the command line (``--segment-bytes``),
the config objects, the plugin's ``BrokerOptions`` and the Kafka launcher's properties.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_KEY = "logbench_setting"


@dataclass(frozen=True)
class Setting:
    """One setting: ``name`` is the field (and the option) name; ``flag`` its command line."""

    name: str
    default: Any
    type: Any
    help: str
    kafka: str | None = None  # the Kafka broker config it maps to, if any
    choices: tuple[str, ...] | None = None
    local_only: bool = False  # meaningful only for this broker's own process
    scope: str = "broker"  # "log" (LogConfig) or "broker" (BrokerConfig)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def setting(
    default: Any,
    help: str,
    *,
    kafka: str | None = None,
    choices: tuple[str, ...] | None = None,
    local_only: bool = False,
) -> Any:
    """A dataclass field that is also a broker setting (see the module docstring)."""
    return dataclasses.field(
        default=default,
        metadata={
            _KEY: {"help": help, "kafka": kafka, "choices": choices, "local_only": local_only}
        },
    )


def settings_of(config_class: type, scope: str) -> tuple[Setting, ...]:
    """The settings a config dataclass declares, in declaration order."""
    found = []
    for field in dataclasses.fields(config_class):
        meta = field.metadata.get(_KEY)
        if meta is None:
            continue
        found.append(
            Setting(
                field.name,
                field.default,
                field.type,
                meta["help"],
                meta["kafka"],
                meta["choices"],
                meta["local_only"],
                scope,
            )
        )
    return tuple(found)
