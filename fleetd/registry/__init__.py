"""The etcd v3 store: key layout, codecs, the asyncio client, leases and watches.

The only package that imports gRPC or protobuf.
"""
