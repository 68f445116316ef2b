#!/usr/bin/env python3
"""Issue a seckill-gateway admission token (docs/admission-tokens.md).

Usage: issue_token.py KEY USER [ITEM] [TTL_SECONDS]

KEY is the gateway's [admission] key; ITEM an item id or * (any item, the
default); TTL_SECONDS how long the token is valid from now (default 900).
Python 3, standard library only.
"""
import base64
import hashlib
import hmac
import secrets
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def issue_token(key: str, user: str, item: str = "*", ttl: int = 900, now: int = None) -> str:
    now = int(time.time()) if now is None else now
    nonce = secrets.token_hex(12)
    payload = f"{user}|{item}|{now}|{now + ttl}|{nonce}".encode("ascii")
    body = "v1." + b64url(payload)
    sig = hmac.new(key.encode(), body.encode("ascii"), hashlib.sha256).digest()
    return body + "." + b64url(sig)


if __name__ == "__main__":
    if len(sys.argv) < 3 or len(sys.argv) > 5:
        sys.exit(__doc__)
    item = sys.argv[3] if len(sys.argv) > 3 else "*"
    ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 900
    print(issue_token(sys.argv[1], sys.argv[2], item, ttl))
