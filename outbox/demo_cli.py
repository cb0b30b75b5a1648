"""``outbox demo``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from outbox.common import LogFormat, setup_logging


def demo(
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep running after the scenario until Ctrl-C.")
    ] = False,
    rate: Annotated[
        float, typer.Option("--rate", help="After the scenario, commit N notifications/s ...")
    ] = 0.0,
    duration: Annotated[float, typer.Option("--duration", help="... for this many seconds.")] = 0.0,
    router_port: Annotated[
        int | None, typer.Option("--port", help="Router port (default: a free one).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="Only the summary, not every frame.")
    ] = False,
    linger_ms: Annotated[
        int | None,
        typer.Option("--linger-ms", min=0, max=1000, help="Connect's producer linger.ms for the demo's "
                     "connector. Default: 0; for a load of 500/s or more, or of 6,000 notifications or "
                     "more, a third of --duration's seconds in ms, from 20 to 250. A linger comes with batches of up to 512 KB, so that it "
                     "decides their count (the embedded broker slows down as record batches pile "
                     "up: docs/operations.md)."),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", min=1, max=64, help="Partitions of the notification topic. "
                     "Default: the stack's (6), or 1 for a load that gets a linger (every fetch of a partition "
                     "costs the embedded broker a walk over all its stored batches: docs/operations.md)."),
    ] = None,
) -> None:  # fmt: skip
    """The whole pipeline, live: Postgres commit -> Debezium -> Kafka -> router -> WebSocket.

    Starts the embedded stack, the relay and the router, plays every catalog type
    as the platform's services would (one transaction rolled back), prints what
    each teacher's client receives with its commit-to-frame latency and a summary,
    then stops everything. Exit status 1 if anything was lost or duplicated.
    """
    from outbox.demo import DemoOptions, demo_linger_ms, demo_partitions, run_demo

    setup_logging(LogFormat.human, "WARNING")
    if linger_ms is None:
        linger_ms = demo_linger_ms(rate, duration)
    if partitions is None:
        partitions = demo_partitions(rate, duration)
    opts = DemoOptions(serve=serve, rate=rate, duration=duration, quiet=quiet,
                       router_port=router_port, linger_ms=linger_ms, partitions=partitions)  # fmt: skip
    raise typer.Exit(asyncio.run(run_demo(opts)))
