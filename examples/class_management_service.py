"""A class-management service creating a class: the domain change, the domain
event for other services and the teacher's notification in one transaction.

The platform's canonical path: publish the domain event through the outbox and
hand it straight to the service's notification projector (no Kafka round trip);
either all of it commits or none of it does. Run against the embedded stack::

    eval "$(outbox stack env)"; outbox db migrate
    python examples/class_management_service.py --teacher teacher-1 --name "7B English"
"""

from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import dataclass

import psycopg

from contracts.projector import DomainEvent, Projector


@dataclass(frozen=True)
class ClassCreated:
    """The service's own domain event."""

    class_id: str
    owner_teacher_id: str
    name: str
    request_id: str


class_created = Projector[ClassCreated](
    notification_type="class_created",
    teacher_id=lambda e: e.owner_teacher_id,
    payload=lambda e: {"class_name": e.name, "message": f"Class {e.name} was created."},
    correlation_id=lambda e: e.request_id,
    class_id=lambda e: e.class_id,
)


CLASS_CREATED = DomainEvent[ClassCreated](
    topic="huleedu.class_management.class.created.v1",
    event_type="ClassCreated",
    key=lambda e: e.class_id,
    # For services: no user context beyond the ids they coordinate on.
    data=lambda e: {"class_id": e.class_id, "name": e.name, "owner": e.owner_teacher_id},
    correlation_id=lambda e: e.request_id,
    projectors=(class_created,),
)


def create_class(conn: psycopg.Connection[tuple[object, ...]], teacher: str, name: str) -> str:
    event = ClassCreated(str(uuid.uuid4()), teacher, name, str(uuid.uuid4()))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS demo_classes "
            "(id text PRIMARY KEY, teacher_id text NOT NULL, name text NOT NULL)"
        )
        cur.execute(
            "INSERT INTO demo_classes (id, teacher_id, name) VALUES (%s, %s, %s)",
            (event.class_id, teacher, name),
        )
        published = CLASS_CREATED.publish(cur, event)  # same transaction as the insert
    return f"domain event {published.event_id}, notification {published.notification_ids[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("OUTBOX_PG_DSN"))
    parser.add_argument("--teacher", default="teacher-1")
    parser.add_argument("--name", default="7B English")
    args = parser.parse_args()
    if not args.dsn:
        parser.error('pass --dsn or set OUTBOX_PG_DSN (eval "$(outbox stack env)")')
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        print(create_class(conn, args.teacher, args.name), "committed")


if __name__ == "__main__":
    main()
