#!/usr/bin/env python3
"""A small Weir consumer in Python, using stubs generated from proto/ by grpcio-tools.

For each partition of the topic (or the one given), the consumer opens a Fetch stream on the
partition's leader with ``decode=true``, so the broker sends decoded protobuf records, and
prints one line per record: ``partition<TAB>offset<TAB>key<TAB>value``. It stops reading a
partition once it has caught up with the high watermark, unless --follow is given.

    python consumer.py --topic greetings
    python consumer.py --topic greetings --partition 0 --offset 100 --follow

Generate the stubs first (see README.md); --stubs (or WEIR_STUBS) says where they are.
"""

import argparse
import os
import sys

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(path):
    """Imports the generated modules (they import each other by top-level name)."""
    sys.path.insert(0, path)
    global broker_pb2, broker_pb2_grpc, common_pb2
    import broker_pb2  # noqa: E402
    import broker_pb2_grpc  # noqa: E402
    import common_pb2  # noqa: E402


def fail_on_error(response, what):
    if response.HasField("error") and response.error.code != common_pb2.NONE:
        name = common_pb2.ErrorCode.Name(response.error.code)
        sys.exit(f"error: {what}: {name}: {response.error.message}")


def metadata(bootstrap, topic):
    """The topic's metadata from the first bootstrap broker that answers."""
    last = None
    for address in bootstrap:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = broker_pb2_grpc.BrokerStub(channel)
                meta = stub.Metadata(broker_pb2.MetadataRequest(topics=[topic]), timeout=10)
        except grpc.RpcError as e:
            last = e
            continue
        fail_on_error(meta.topics[0], f"topic {topic}")
        return meta
    sys.exit(f"error: cannot reach the cluster at {','.join(bootstrap)} ({last})")


def text(value):
    return value.decode("utf-8", errors="replace")


def consume_partition(stub, topic, partition, offset, follow, remaining, null=""):
    """Prints the partition's records from `offset` on; returns how many were printed."""
    request = broker_pb2.FetchRequest(
        topic=topic,
        partition=partition,
        offset=offset,
        max_bytes=1 << 20,
        max_wait_ms=500,
        decode=True,
    )
    stream = stub.Fetch(request)
    printed = 0
    try:
        for response in stream:
            fail_on_error(response, f"fetching {topic}-{partition}")
            for record in response.records:
                key = text(record.key) if record.HasField("key") else null
                value = text(record.value) if record.HasField("value") else null
                print(f"{partition}\t{record.offset}\t{key}\t{value}")
                printed += 1
                if remaining is not None and printed >= remaining:
                    return printed
            if not follow and response.next_offset >= response.high_watermark:
                return printed
    finally:
        stream.cancel()
    return printed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("WEIR_BOOTSTRAP", "127.0.0.1:9700"),
        help="broker addresses, comma-separated (default: $WEIR_BOOTSTRAP or 127.0.0.1:9700)",
    )
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partition", type=int, help="read only this partition")
    parser.add_argument("--offset", type=int, default=0, help="first offset (default 0)")
    parser.add_argument("--max-messages", type=int, help="stop after N records")
    parser.add_argument("--follow", action="store_true", help="keep waiting for new records")
    parser.add_argument(
        "--null-marker", default="", help="print a null key or value as TEXT (default: nothing)"
    )
    parser.add_argument(
        "--stubs",
        default=os.environ.get("WEIR_STUBS", os.path.join(HERE, "weir_stubs")),
        help="folder of the generated stubs",
    )
    args = parser.parse_args()
    load_stubs(args.stubs)
    bootstrap = [a.strip() for a in args.bootstrap.split(",") if a.strip()]

    meta = metadata(bootstrap, args.topic)
    brokers = {b.id: b.address for b in meta.brokers}
    partitions = sorted(meta.topics[0].partitions, key=lambda p: p.partition)
    if args.partition is not None:
        partitions = [p for p in partitions if p.partition == args.partition]
        if not partitions:
            sys.exit(f"error: unknown partition {args.partition} of topic {args.topic}")
    if args.follow and len(partitions) > 1:
        sys.exit("error: --follow reads one partition; give --partition")

    total = 0
    for p in partitions:
        if p.leader < 0 or p.leader not in brokers:
            sys.exit(f"error: partition {p.partition} has no leader")
        remaining = None if args.max_messages is None else args.max_messages - total
        with grpc.insecure_channel(brokers[p.leader]) as channel:
            stub = broker_pb2_grpc.BrokerStub(channel)
            total += consume_partition(
                stub, args.topic, p.partition, args.offset, args.follow, remaining, args.null_marker
            )
        if args.max_messages is not None and total >= args.max_messages:
            break
    print(f"consumed {total} records from {args.topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
