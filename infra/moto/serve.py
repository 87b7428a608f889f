"""moto server, with DynamoDB calls applied one at a time, as DynamoDB applies each atomically.

moto serves requests on threads and its DynamoDB backend takes no lock. Under concurrent writes
that breaks what DynamoDB guarantees and what staleless relies on:

- a ``TransactWriteItems`` that fails a condition restores a deep copy of every table it touches,
  taken when it started, undoing any write other requests made to those tables meanwhile (an
  acknowledged write is lost);
- a condition is checked and the write applied in separate steps, so two conditional writes
  racing on one item can both pass;
- a stream reader can see records of a transaction that is then rolled back.

Serializing the DynamoDB and DynamoDB Streams backends' public calls behind one lock restores
per-request atomicity; nothing else changes. Those calls never block (long polling is SQS's, which
stays concurrent). Run as ``python serve.py -H 127.0.0.1 -p 4566``: moto server's own arguments.

Two changes make each request cheaper, which matters when a test machine runs several emulators
at once: moto lists its own package directory (a ``stat`` per service, under a global lock) on
every request to find the service, though the list cannot change while it runs, so the list is
read once; and ``STALELESS_MOTO_ACCESS_LOG=0`` turns off the line werkzeug logs per request
(errors are still logged), for callers that discard the output anyway.
"""

import functools
import inspect
import logging
import os
import threading

from moto import backends
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.server import main

_DYNAMODB = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with _DYNAMODB:
            return method(*args, **kwargs)

    return call


for backend in (DynamoDBBackend, DynamoDBStreamsBackend):
    for name, member in list(vars(backend).items()):
        # Plain methods only: wrapping a staticmethod would bind it to the instance.
        if inspect.isfunction(member) and not name.startswith("_"):
            setattr(backend, name, _serialized(member))

_MOTO_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MOTO_MODULES

if __name__ == "__main__":
    if os.environ.get("STALELESS_MOTO_ACCESS_LOG") == "0":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    main()
