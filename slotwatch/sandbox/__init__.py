"""Real PostgreSQL, consumer, liveness and snapshot stand-ins shared by the demo and the tests.

Nothing here is mocked: clusters are real ``postgres`` processes, the consumer is the real
``pg_recvlogical`` streaming pgoutput, the liveness endpoint is a real HTTP server. Everything is
throwaway, on 127.0.0.1 only, and cleaned up by its owner.
"""
