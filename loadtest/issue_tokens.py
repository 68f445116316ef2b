#!/usr/bin/env python3
"""Issue admission tokens for the load generator: line i for user u<i>.

Usage: issue_tokens.py KEY N FILE

Each token is signed with KEY for any item, valid for an hour from now
(docs/issue_token.py makes them); loadtest/seckill.lua sends line i with
user u<i> when SECKILL_TOKENS names FILE. Python 3, standard library only.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
from issue_token import issue_token  # noqa: E402


def main():
    if len(sys.argv) != 4 or not sys.argv[2].isdigit():
        sys.exit(__doc__)
    key, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "w") as f:
        for u in range(1, n + 1):
            f.write(issue_token(key, "u%d" % u, "*", 3600) + "\n")


if __name__ == "__main__":
    main()
