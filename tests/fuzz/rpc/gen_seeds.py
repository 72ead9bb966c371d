#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_rpc_server (byte 0 mode, byte 1 split, then HTTP/2 bytes).
Headers use HPACK literals without Huffman so the seeds stay readable."""
import os
import struct

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def lit(name, value):
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def headers(stream, path, end_stream=False, extra=b""):
    block = (lit(b":method", b"POST") + lit(b":scheme", b"http") + lit(b":path", path) +
             lit(b":authority", b"x") + lit(b"content-type", b"application/grpc") +
             lit(b"te", b"trailers") + extra)
    return frame(1, 4 | (1 if end_stream else 0), stream, block)


def grpc(msg, flag=0):
    return bytes([flag]) + struct.pack(">I", len(msg)) + msg


def data(stream, payload, end_stream=True):
    return frame(0, 1 if end_stream else 0, stream, payload)


settings = frame(4, 0, 0, b"")
range_req = b"\x0a\x03foo\x12\x03fop"          # key, range_end
watch_create = b"\x0a\x05\x0a\x03foo"           # create_request{key}
watch_cancel = b"\x12\x02\x08\x01"              # cancel_request{watch_id: 1}
seeds = {
    "garbage": b"\x00\x05GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "range": b"\x00\x20" + MAGIC + settings + headers(1, b"/etcdserverpb.KV/Range") +
             data(1, grpc(range_req)),
    "put_held": b"\x01\x10" + headers(1, b"/etcdserverpb.KV/Put", extra=lit(b"grpc-timeout", b"2S")) +
                data(1, grpc(b"\x0a\x01k\x12\x01v")),
    "watch": b"\x01\x30" + headers(1, b"/etcdserverpb.Watch/Watch") +
             data(1, grpc(watch_create), False) + data(1, grpc(watch_cancel), False) +
             frame(3, 0, 1, struct.pack(">I", 8)),
    "unknown_and_bad": b"\x01\x00" + headers(1, b"/x.Y/Z", True) +
                       headers(3, b"/etcdserverpb.KV/Range") + data(3, grpc(b"\xff\xff", 1)) +
                       frame(6, 0, 0, b"12345678") + frame(7, 0, 0, struct.pack(">II", 3, 0)),
}
for name, blob in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(blob)

# ---- Client seeds: what a server sends (byte 0 = split) ----------------------------------------
client_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_client")
os.makedirs(client_dir, exist_ok=True)


def resp_headers(stream, end_stream=False):
    block = lit(b":status", b"200") + lit(b"content-type", b"application/grpc")
    return frame(1, 4 | (1 if end_stream else 0), stream, block)


def trailers(stream, status, message=b""):
    block = lit(b"grpc-status", status) + (lit(b"grpc-message", message) if message else b"")
    return frame(1, 5, stream, block)


range_resp = b"\x0a\x02\x18\x05" + b"\x12\x06\x0a\x01k\x2a\x01v" + b"\x20\x01"
watch_resp = b"\x10\x01\x18\x01" + b"\x5a\x05\x12\x03\x0a\x01k"
settings_ack = frame(4, 1, 0, b"")
client_seeds = {
    "ok": b"\x09" + settings + settings_ack + resp_headers(1) + data(1, grpc(range_resp), False) +
          trailers(1, b"0"),
    "errors": b"\x00" + settings + frame(1, 5, 1, lit(b":status", b"200") +
                                         lit(b"grpc-status", b"11") +
                                         lit(b"grpc-message", b"etcdserver: mvcc: required%20revision")) +
              resp_headers(3) + data(3, grpc(watch_resp), False) + data(3, grpc(watch_resp), False) +
              frame(3, 0, 3, struct.pack(">I", 8)),
    "goaway": b"\x20" + settings + resp_headers(5) + data(5, grpc(b"\xff" * 10)[:8], False) +
              frame(7, 0, 0, struct.pack(">II", 1, 11)) + frame(6, 0, 0, b"pingpong"),
}
for name, blob in client_seeds.items():
    with open(os.path.join(client_dir, name), "wb") as f:
        f.write(blob)
