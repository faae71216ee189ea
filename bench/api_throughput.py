"""API throughput of generate_thoughts.py against a local server with a fixed 200 ms latency.

    python bench/api_throughput.py

One run each with 1 and 16 workers; the ideal for 16 workers is 16 / 0.2 s = 80 requests/s
(goal: >= 0.8 x ideal). The server is nli_finetune/testing/fake_chat_server.py on 127.0.0.1. A benchmark, not a test.
"""

import csv
import os
import sys
import tempfile
import time
from pathlib import Path

from nli_finetune.cli import ArgumentParser, format_table
from nli_finetune.testing.fake_chat_server import FakeChatServer
from scripts.generate_thoughts import main as generate

LATENCY = 0.2


def run(server, workers: int, n: int, work: Path) -> float:
    data = work / f"in_{workers}.csv"
    with open(data, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "premise", "hypothesis", "label"])
        writer.writeheader()
        writer.writerows({"id": f"{workers}-{i}", "premise": f"P {workers} {i}", "hypothesis": f"H {i}", "label": 1}
                         for i in range(n))
    started = time.time()
    code = generate(["--input-csv", str(data), "--output-json", str(work / f"out_{workers}.jsonl"), "--api", "local",
                     "--api-base", server.base_url, "--workers", str(workers)])
    assert code == 0
    return n / (time.time() - started)


def main() -> int:
    import argparse
    ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    os.environ.setdefault("API_KEY", "bench")
    work = Path(tempfile.mkdtemp(prefix="bench_api_"))
    with FakeChatServer(latency=LATENCY) as server:
        rows = []
        for workers, n in ((1, 25), (16, 400)):
            rate = run(server, workers, n, work)
            ideal = workers / LATENCY
            rows.append({"workers": workers, "requests": n, "requests_per_s": rate, "ideal": ideal,
                         "share_of_ideal": rate / ideal})
    print(f"\nlocal chat server with {LATENCY * 1000:.0f} ms latency, one run each")
    print(format_table(rows, ["workers", "requests", "requests_per_s", "ideal", "share_of_ideal"]))
    print(f"api_throughput: 16 workers reach {rows[1]['share_of_ideal']:.2f} of the ideal {rows[1]['ideal']:.0f} "
          f"requests/s (goal >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
