"""Posts solid-colour frames with the real Jina 3 client, sending an access token
as gRPC metadata (`metadata=`), and prints what came back as one JSON line.

Usage: post_with_token.py ADDR TOKEN FRAMES B,G,R
"""
import json
import sys

import numpy as np
from jina import Client, Document

addr, token, frames, color = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
bgr = [int(c) for c in color.split(",")]

received = []
errors = []


def on_done(resp):
    for d in resp.docs:
        received.append({
            "shape": list(d.tensor.shape),
            "participants": list(d.tags.get("participants") or []),
        })


def on_error(resp):
    errors.append(resp.header.status.description)


def frames_of(n):
    # No user or room tag: the gateway takes both from the token.
    for _ in range(n):
        yield Document(tensor=np.full((200, 300, 3), bgr, dtype=np.uint8))


Client(host=addr).post(
    "/",
    frames_of(frames),
    on_done=on_done,
    on_error=on_error,
    request_size=1,
    metadata=(("authorization", "Bearer " + token),),
)
print(json.dumps({"received": received, "errors": errors}))
