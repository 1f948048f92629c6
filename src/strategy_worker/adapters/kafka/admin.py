"""Topic creation for development, paper runs and tests (production topics are provisioned)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from strategy_worker.adapters.kafka.security import client_kwargs
from strategy_worker.config import KafkaConfig


async def ensure_topics(
    config: KafkaConfig,
    topics: Iterable[str],
    *,
    partitions: int = 3,
    replication_factor: int = 1,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(client_id=f"{config.client_id}-admin", **client_kwargs(config))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name in dict.fromkeys(topics)
            if name not in existing
        ]
        if missing:
            # Another worker may create one between list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
