#!/usr/bin/env python3
"""A small Weir producer in Python, using stubs generated from proto/ by grpcio-tools.

Each line of standard input becomes one record. The producer asks a bootstrap broker for the
topic's metadata, groups the records by partition, and sends each group to that partition's
leader as plain protobuf records (``ProduceRequest.plain``); the broker encodes them into a
record batch. A NOT_LEADER_OR_FOLLOWER answer (the leader moved) refreshes the metadata and
retries.

    python producer.py --topic greetings < lines.txt
    printf 'k1:v1\\nk2:v2\\n' | python producer.py --topic greetings --key-separator :

Generate the stubs first (see README.md); --stubs (or WEIR_STUBS) says where they are.
"""

import argparse
import itertools
import os
import sys
import time
import zlib

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(path):
    """Imports the generated modules (they import each other by top-level name)."""
    sys.path.insert(0, path)
    global broker_pb2, broker_pb2_grpc, common_pb2
    import broker_pb2  # noqa: E402
    import broker_pb2_grpc  # noqa: E402
    import common_pb2  # noqa: E402


def error_of(response):
    """The (code, message) of an answer's error, or None for success."""
    if response.HasField("error") and response.error.code != common_pb2.NONE:
        return response.error.code, response.error.message
    return None


def code_name(code):
    return common_pb2.ErrorCode.Name(code)


class Cluster:
    """Channels to brokers by address, and the topic's partition leaders."""

    def __init__(self, bootstrap, topic):
        self.bootstrap = bootstrap
        self.topic = topic
        self.channels = {}
        self.refresh()

    def stub(self, address):
        if address not in self.channels:
            self.channels[address] = grpc.insecure_channel(address)
        return broker_pb2_grpc.BrokerStub(self.channels[address])

    def refresh(self):
        """Asks the bootstrap brokers, in turn, for the topic's metadata."""
        last = None
        for address in self.bootstrap:
            try:
                meta = self.stub(address).Metadata(
                    broker_pb2.MetadataRequest(topics=[self.topic]), timeout=10
                )
            except grpc.RpcError as e:
                last = e
                continue
            topic = meta.topics[0]
            err = error_of(topic)
            if err:
                sys.exit(f"error: {code_name(err[0])}: {err[1]}")
            self.brokers = {b.id: b.address for b in meta.brokers}
            self.leaders = {p.partition: p.leader for p in topic.partitions}
            return
        sys.exit(f"error: cannot reach the cluster at {','.join(self.bootstrap)} ({last})")

    def leader_stub(self, partition):
        leader = self.leaders.get(partition, -1)
        if leader < 0 or leader not in self.brokers:
            return None
        return self.stub(self.brokers[leader])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("WEIR_BOOTSTRAP", "127.0.0.1:9700"),
        help="broker addresses, comma-separated (default: $WEIR_BOOTSTRAP or 127.0.0.1:9700)",
    )
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partition", type=int, help="send every record to this partition")
    parser.add_argument("--key-separator", help="split each line into key and value at SEP")
    parser.add_argument(
        "--null-marker", help="a key or value that is exactly TEXT is sent as null (a tombstone)"
    )
    parser.add_argument("--acks", type=int, default=-1, choices=[0, 1, -1])
    parser.add_argument("--batch", type=int, default=500, help="records per request")
    parser.add_argument(
        "--stubs",
        default=os.environ.get("WEIR_STUBS", os.path.join(HERE, "weir_stubs")),
        help="folder of the generated stubs",
    )
    args = parser.parse_args()
    load_stubs(args.stubs)

    cluster = Cluster([a.strip() for a in args.bootstrap.split(",") if a.strip()], args.topic)
    partitions = sorted(cluster.leaders)

    # Group the records by partition: an explicit partition, else a hash of the key (crc32
    # here, for brevity; the Rust client uses Kafka's murmur2), else round robin.
    by_partition = {p: [] for p in partitions}
    round_robin = itertools.cycle(partitions)
    for line in sys.stdin.buffer:
        line = line.rstrip(b"\n").rstrip(b"\r")
        key = None
        if args.key_separator:
            key, sep, value = line.partition(args.key_separator.encode())
            if not sep:
                sys.exit(f"error: no key separator in line {line!r}")
        else:
            value = line
        if args.partition is not None:
            partition = args.partition
        elif key is not None:
            partition = partitions[zlib.crc32(key) % len(partitions)]
        else:
            partition = next(round_robin)
        marker = args.null_marker.encode() if args.null_marker is not None else None
        # Absent optional fields are nulls on the wire.
        record = broker_pb2.Record()
        if value != marker:
            record.value = value
        if key is not None and key != marker:
            record.key = key
        by_partition.setdefault(partition, []).append(record)

    produced = 0
    for partition, records in sorted(by_partition.items()):
        for start in range(0, len(records), args.batch):
            chunk = records[start : start + args.batch]
            request = broker_pb2.ProduceRequest(
                topic=args.topic,
                partition=partition,
                acks=args.acks,
                plain=broker_pb2.RecordList(records=chunk),
            )
            base = send(cluster, partition, request)
            produced += len(chunk)
            print(f"partition {partition}: {len(chunk)} records at offset {base}", file=sys.stderr)
    print(f"produced {produced} records to {args.topic}", file=sys.stderr)


def send(cluster, partition, request):
    """Sends one request to the partition's leader, following leader changes; the base offset."""
    for attempt in range(10):
        stub = cluster.leader_stub(partition)
        if stub is None:
            err = (common_pb2.NOT_LEADER_OR_FOLLOWER, f"partition {partition} has no leader")
        else:
            try:
                response = stub.Produce(request, timeout=30)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                err = (common_pb2.NOT_LEADER_OR_FOLLOWER, str(e))
            else:
                err = error_of(response)
                if err is None:
                    return response.base_offset
        retriable = (
            common_pb2.NOT_LEADER_OR_FOLLOWER,
            common_pb2.NOT_ENOUGH_REPLICAS,
            common_pb2.REQUEST_TIMED_OUT,
        )
        if err[0] not in retriable:
            break
        time.sleep(0.2 * (attempt + 1))
        cluster.refresh()
    sys.exit(f"error: producing to {request.topic}-{partition}: {code_name(err[0])}: {err[1]}")


if __name__ == "__main__":
    main()
