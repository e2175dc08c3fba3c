"""Waits until an HTTP server on loopback answers: `python3 scripts/wait-http.py METHOD URL SECONDS`.

Used by scripts/s3-server.sh and scripts/mlflow-server.sh; exits 1 if nothing answers in time.
"""
import sys
import time
import urllib.request

method, url, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + seconds
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing answered {method} {url} within {seconds:.0f} s")
        time.sleep(0.1)
