"""Posts solid-colour frames to a gateway with the real Jina 3 client, one frame
per request, and prints what each on_done callback received as one JSON line.

Usage: post_frames.py ADDR USER FRAMES B,G,R
"""
import json
import sys

import numpy as np
from jina import Client, Document

addr, user, frames, color = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
bgr = [int(c) for c in color.split(",")]

received = []
errors = []


def on_done(resp):
    for d in resp.docs:
        t = d.tensor
        band_colors = []
        for top in range(0, t.shape[0], 200):
            band = t[top:top + 200]
            first = band[0, 0].tolist()
            band_colors.append(first if bool((band == band[0, 0]).all()) else None)
        received.append({
            "shape": list(t.shape),
            "dtype": str(t.dtype),
            "bands": band_colors,
            "user": d.tags.get("user"),
        })


def on_error(resp):
    errors.append(resp.header.status.description)


def frames_of(n):
    for _ in range(n):
        yield Document(tensor=np.full((200, 300, 3), bgr, dtype=np.uint8), tags={"user": user})


Client(host=addr).post("/", frames_of(frames), on_done=on_done, on_error=on_error, request_size=1)
print(json.dumps({"received": received, "errors": errors}))
