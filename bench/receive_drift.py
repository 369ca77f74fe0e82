"""Pacing of a `receive` stream: asks a TestPatternSource at 30 fps for N frames
over the raw gRPC protocol and compares the time from the first frame to the last
with (N - 1) / 30 s.

Usage (grpcio from the Jina venv, see scripts/jina-venv.sh):
    vchat flow --uses examples/streams/receive.yml --host 127.0.0.1 --port 0
    target/jina-venv/bin/python bench/receive_drift.py 127.0.0.1:PORT 1800
"""
import sys, time, grpc
from jina.proto.docarray_v1.pb import jina_pb2
from google.protobuf import struct_pb2
addr, n = sys.argv[1], int(sys.argv[2])
ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", -1)])
call = ch.stream_stream("/jina.JinaRPC/Call", request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b)
req = jina_pb2.DataRequestProto()
req.header.request_id = "drift"
req.header.exec_endpoint = "/watch"
req.parameters.update({"frames": n})
done = []
def gen():
    yield req
    while len(done) == 0:
        time.sleep(0.1)
count = 0
t0 = None
for resp in call(gen()):
    count += 1
    if t0 is None:
        t0 = time.monotonic()
    if count == n:
        t1 = time.monotonic()
        done.append(1)
        break
print(f"frames {count} first-to-last {t1 - t0:.3f} s expected {(n - 1) / 30:.3f} s drift {(t1 - t0) - (n - 1) / 30:+.3f} s")
