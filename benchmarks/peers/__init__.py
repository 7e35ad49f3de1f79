"""tidegate side by side with Redis Streams and NATS JetStream, in one run on one machine.

    make bench-peers                  # installs the servers if missing, full sizes
    make bench-peers PEERS=--quick    # a one-minute smoke run
    .venv/bin/python -m benchmarks.peers [--quick] [--json] [--systems ...] [--workloads ...]

Every server is started here on 127.0.0.1, on a free port, with a temporary
data directory, and stopped by its own process id. The same workloads run
against each (see ``workloads.py``); one table compares them, row by row at
the same durability tier (``results.py`` says what each tier means for each
system). The pure parts (figures, ratios, parsing, the table) are unit-tested;
the run itself is a measurement and asserts nothing about speed.
"""
