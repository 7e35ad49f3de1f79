"""The broker's wire contract: ``broker.proto`` and its generated code (committed).

``scripts/gen-proto.sh`` regenerates ``broker_pb2*.py``/``.pyi``; a test checks
they match the ``.proto``. Only :mod:`broker.service` touches these types:
protobuf values never travel past the servicer.
"""
