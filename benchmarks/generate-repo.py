#!/usr/bin/env python3
# A seeded repository for git fast-import: COMMITS commits, each changing 4 of 400 files of
# 1200 random bytes (6000 commits: ~58,000 objects, a ~32 MiB pack).
# Usage: python3 benchmarks/generate-repo.py COMMITS SEED | git fast-import --quiet
import random, sys
random.seed(int(sys.argv[2]))
n = int(sys.argv[1]); out = sys.stdout.buffer
for c in range(1, n + 1):
    msg = f"commit {c}".encode()
    out.write(b"commit refs/heads/main\nmark :%d\ncommitter b <b@b> %d +0000\ndata %d\n%s\n" % (c, 1700000000 + c, len(msg), msg))
    if c > 1: out.write(b"from :%d\n" % (c - 1))
    for _ in range(4):
        f = random.randrange(400)
        body = random.randbytes(1200)
        out.write(b"M 100644 inline d%d/f%d\ndata %d\n" % (f % 20, f, len(body)) + body + b"\n")
    out.write(b"\n")
