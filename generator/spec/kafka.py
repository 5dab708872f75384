"""What each of our Kafka clients does on which resource: the one table the rendered KafkaUsers' ACLs are
generated from (:mod:`generator.render.renderer`) and that ``mlops validate`` checks them against, reading
the resource names from the clients' own rendered environment (:mod:`generator.check.kafka`).

The operations are those the services' code performs (``components/model_server/shipper.py``,
``components/drift_detector/consumer.py``): the model server produces to its inference log (metadata of
that topic, then produce); the drift detector consumes the log as its group (fetch, offset commit), produces
rejected records to the dead-letter topic, and writes then reads back its state topic without a group.
Kafka's ``simple`` authorizer lets Read and Write imply Describe; Describe is listed anyway so the ACL says
what the client needs, and no client needs any cluster operation, Create or IdempotentWrite (aiokafka's
producers here are not idempotent and topics are KafkaTopic objects).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Access:
    """One resource a client uses, and how."""

    resource: str
    """``topic`` or ``group`` (Strimzi's ACL resource types)."""
    name_key: str
    """Key of :class:`generator.spec.naming.ModelNames` giving the resource's name."""
    variable: str
    """The client's environment variable that names the resource in its rendered manifest."""
    operations: tuple[str, ...]


KAFKA_CLIENTS: dict[str, tuple[Access, ...]] = {
    "model-server": (
        Access("topic", "topic", "MODEL_SERVER_KAFKA_TOPIC", ("Describe", "Write")),
    ),
    "drift-detector": (
        Access("topic", "topic", "DRIFT_TOPIC", ("Describe", "Read")),
        Access("group", "consumer_group", "DRIFT_GROUP_ID", ("Read",)),
        Access("topic", "dead_letter_topic", "DRIFT_DEAD_LETTER_TOPIC", ("Describe", "Write")),
        Access("topic", "state_topic", "DRIFT_STATE_TOPIC", ("Describe", "Read", "Write")),
    ),
}
"""Component (``app.kubernetes.io/component`` of its pods) → what it may do. Nothing else is allowed."""

ENV_PREFIX = {"model-server": "MODEL_SERVER_", "drift-detector": "DRIFT_"}
"""Each client's settings prefix (``<prefix>KAFKA_SECURITY_PROTOCOL``, ``<prefix>KAFKA_USERNAME``...)."""
USER_NAME_KEY = {"model-server": "kafka_user_model_server", "drift-detector": "kafka_user_drift_detector"}
"""Key of :class:`generator.spec.naming.ModelNames` giving each client's KafkaUser."""
