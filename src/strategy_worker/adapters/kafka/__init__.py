"""Kafka adapters: the record consumer (commit after handling), the event and dead-letter
publishers over one idempotent producer, and connection security from config."""

from strategy_worker.adapters.kafka.admin import ensure_topics
from strategy_worker.adapters.kafka.consumer import (
    ConsumedRecord,
    KafkaRecordConsumer,
    RecordHandler,
    is_retryable,
)
from strategy_worker.adapters.kafka.producer import (
    KafkaDeadLetterPublisher,
    KafkaEventPublisher,
    KafkaProducer,
)
from strategy_worker.adapters.kafka.security import client_kwargs, ssl_context

__all__ = [
    "ConsumedRecord",
    "KafkaDeadLetterPublisher",
    "KafkaEventPublisher",
    "KafkaProducer",
    "KafkaRecordConsumer",
    "RecordHandler",
    "client_kwargs",
    "ensure_topics",
    "is_retryable",
    "ssl_context",
]
