"""Connecting to Temporal: envconfig profiles + implflow's data converter."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from implflow.converter import data_converter


def connect_options(**overrides: Any) -> dict[str, Any]:
    """Connection options from ``TEMPORAL_*`` variables and the active profile.

    Defaults to ``localhost:7233`` / namespace ``default`` when nothing is set.
    """
    options: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    options.setdefault("target_host", "localhost:7233")
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A client with implflow's data converter, configured from the environment."""
    options = connect_options(target_host=address, namespace=namespace)
    target = options.pop("target_host")
    return await Client.connect(target, data_converter=data_converter, **options)
