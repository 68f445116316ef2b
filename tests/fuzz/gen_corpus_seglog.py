#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_seglog_recover into tests/fuzz/corpus_seglog/.

Record and index formats: the design comment at the top of queue/seglog.c.
Usage: gen_corpus_seglog.py [out_dir]
"""
import os
import struct
import sys


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(offset, key, value, ts=1000, pid=42, seq=None):
    seq = offset + 1 if seq is None else seq
    body = struct.pack("<QQQQII", offset, ts + offset, pid, seq, len(key), len(value)) + key + value
    crc = crc32c(body)
    return struct.pack("<II", 4 + len(body), crc) + body


def segment(base, n, size=8):
    return b"".join(record(base + i, b"k%d" % i if i % 3 else b"", (b"v%d-" % (base + i)) * (1 + i % size))
                    for i in range(n))


def index(base, seg):
    end, pos, max_ts, n = base, 0, 0, 0
    while pos < len(seg):
        ln = struct.unpack_from("<I", seg, pos)[0]
        max_ts = struct.unpack_from("<Q", seg, pos + 16)[0]
        pos += 4 + ln
        end += 1
    body = struct.pack("<QQQQII", base, end, len(seg), max_ts, 0, 0)
    return b"MQIX" + struct.pack("<I", crc32c(body)) + body


def multi(*files):
    out = b"MQFZ"
    for kind, base, data in files:
        out += struct.pack("<BBH", kind, base, len(data)) + data
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus_seglog")
    os.makedirs(out, exist_ok=True)
    valid = segment(0, 6)
    torn = segment(0, 4)
    bad_crc = bytearray(segment(0, 4))
    second = len(record(0, b"", b"v0-"))
    bad_crc[second + 20] ^= 0x5A
    seg0, seg3 = segment(0, 3), segment(3, 2)
    seeds = {
        "valid_6_records": valid,
        "torn_tail": torn[: len(torn) - 7],
        "bad_crc_second_record": bytes(bad_crc),
        "zero_filled_tail": segment(0, 2) + bytes(100),
        "garbage": bytes((i * 197 + 13) & 0xFF for i in range(300)),
        "empty": b"",
        "multi_sealed_with_index": multi((0, 0, seg0), (1, 0, index(0, seg0)), (0, 3, seg3)),
        "multi_gap": multi((0, 0, seg0), (0, 5, segment(5, 2))),
        "multi_stale_index": multi((0, 0, seg0), (1, 0, index(0, segment(0, 2))), (0, 3, seg3)),
        # the harness recomputes CRCs: offsets out of order, then a key_len that disagrees with len
        "crcfix_bad_offset": b"MQCR" + record(0, b"k", b"a") + record(2, b"k", b"b"),
        "crcfix_bad_lengths": b"MQCR" + segment(0, 2) + record(2, b"kk", b"v")[:40] + struct.pack("<II", 7, 1)
        + bytes(44),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
