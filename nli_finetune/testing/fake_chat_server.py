"""A local OpenAI-compatible chat-completions server for tests, benchmarks and dry runs (127.0.0.1 only).

    python -m nli_finetune.testing.fake_chat_server --port 8000 --latency 0.2
    API_KEY=x python scripts/generate_thoughts.py --api local --input-csv data/sample/sample.csv \
        --output-json /tmp/thoughts.jsonl

It answers like a teacher model: NLI thoughts, reflections or scores depending on the system prompt,
with the label read from the hypothesis (`[label:0]` markers win, else a stable hash). Markers in the
user message inject failures, counted per message: `[mode:429once]` (429 with Retry-After),
`[mode:500twice]`, `[mode:slowonce]` (sleeps past a client timeout), `[mode:badjson]` (malformed once), `[mode:echo401]` (401 echoing the key),
`[mode:badlabel]` (label 7 once), `[mode:alwaysbad]`, `[mode:always500]`, `[mode:toolong]` (400, as for a
prompt over the context length). Answer shapes: `[mode:parts]` (content as a list of text parts),
`[mode:dictcontent]`, `[mode:intcontent]`, `[mode:usagelist]`, `[mode:usagestr]` (malformed, every time),
`[mode:prose]` (braces in prose before the answer object), `[mode:huge]` (an answer of `huge_bytes`),
`[mode:drip]` (the body sent in pieces over `slow_seconds`), `[mode:echopartial]` (401 echoing a truncated
key). `force_mode` applies a mode to every request (an endpoint that refuses everything: "toolong").
"""

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    def __init__(self, port: int = 0, latency: float = 0.0, slow_seconds: float = 3.0, retry_after: str = "1",
                 huge_bytes: int = 20 * 2**20):
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
        self.huge_bytes, self.force_mode = huge_bytes, None
        self.attempts: Counter = Counter()
        self.auth_headers: list[str] = []
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload, headers = server.respond(body, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                drip = headers.pop("X-Drip-Seconds", None)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if drip is None:
                        self.wfile.write(data)
                    else:  # a server that keeps the connection busy: one piece every 0.1 s
                        pieces = max(1, int(float(drip) / 0.1))
                        size = -(-len(data) // pieces)
                        for start in range(0, len(data), size):
                            self.wfile.write(data[start:start + size])
                            self.wfile.flush()
                            time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _label(text: str) -> int:
        marker = re.search(r"\[label:([01])\]", text)
        if marker:
            return int(marker.group(1))
        hypothesis = text.split("Hypothesis:", 1)[-1].split("\n", 1)[0]
        return hashlib.sha256(hypothesis.encode()).digest()[0] % 2

    def _answer(self, system: str, user: str, bad: str | None) -> dict:
        label = self._label(user)
        if bad == "label":
            label = 7
        if "flawed chain of thought" in system:
            given = re.search(r"Correct label: ([01])", user)
            correct = int(given.group(1)) if given else label
            return {"error_analysis": "Step 2 ignored what the premise says.",
                    "improved_thought_process": "Step 1. The premise says so. Step 2. Hence the conclusion.",
                    "predicted_label": 1 - correct if "[reflect:disagree]" in user else correct}
        if "strict grader" in system:
            return {"score": 1 + label * 3, "judge_reasoning": "Grounded.", "improved_thought_process": "Step 1. Better."}
        return {"thought_process": f"Step 1. Read the premise. Step 2. Compare. Step 3. Label {label}.",
                "predicted_label": label}

    def respond(self, body: dict, auth: str):
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        with self.lock:
            self.requests += 1
            self.auth_headers.append(auth)
            self.attempts[user] += 1
            attempt = self.attempts[user]
        if self.latency:
            time.sleep(self.latency)
        mode = self.force_mode or (re.search(r"\[mode:(\w+)\]", user) or [None, "ok"])[1]
        if mode == "echo401":  # a careless server that echoes the credential in its error
            return 401, {"error": f"invalid credential {auth}"}, {}
        if mode == "echopartial":  # as OpenAI does: the key's head and tail
            key = auth.removeprefix("Bearer ")
            return 401, {"error": f"Incorrect API key provided: {key[:12]}****{key[-4:]}"}, {}
        if mode == "toolong":
            return 400, {"error": {"message": "This model's maximum context length is 8192 tokens"}}, {}
        if mode == "429once" and attempt == 1:
            return 429, {"error": "rate limited"}, {"Retry-After": self.retry_after}
        if (mode == "500twice" and attempt <= 2) or mode == "always500":
            return 500, {"error": "server error"}, {}
        if mode == "slowonce" and attempt == 1:
            time.sleep(self.slow_seconds)
        shaped = self._shaped(mode, system, user)
        if shaped is not None:
            return shaped
        bad = None
        if (mode == "badjson" and attempt == 1) or mode == "alwaysbad":
            content = "Sure! Here is my answer: the hypothesis follows"
        else:
            bad = "label" if mode == "badlabel" and attempt == 1 else None
            content = json.dumps(self._answer(system, user, bad))
        usage = {"prompt_tokens": len((system + user).split()), "completion_tokens": len(content.split())}
        return 200, self._completion(body.get("model"), content, usage), {}

    @staticmethod
    def _completion(model, content, usage, fingerprint=None) -> dict:
        return {"id": "cmpl-fake", "object": "chat.completion", "model": model, "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}], "usage": usage}

    def _shaped(self, mode: str, system: str, user: str):
        """The answers of the shape modes (None for the other modes)."""
        if mode not in ("parts", "dictcontent", "intcontent", "usagelist", "usagestr", "prose", "huge", "drip"):
            return None
        answer = json.dumps(self._answer(system, user, None))
        usage = {"prompt_tokens": 3, "completion_tokens": 5}
        shapes = {"parts": lambda: ([{"type": "text", "text": answer[:10]}, {"type": "text", "text": answer[10:]}],
                                    usage),
                  "dictcontent": lambda: ({"text": answer}, usage), "intcontent": lambda: (7, usage),
                  "usagelist": lambda: (answer, [3, 5]), "usagestr": lambda: (answer, {"completion_tokens": "five"}),
                  "prose": lambda: (f"Premise says {{a dog}}; so the answer is {answer} and {{\"extra\": 1}}", usage),
                  "huge": lambda: (answer + " " * self.huge_bytes, usage)}
        if mode in shapes:
            content, used = shapes[mode]()
            return 200, self._completion("fake", content, used), {}
        if mode == "drip":
            return 200, self._completion("fake", answer, usage), {"X-Drip-Seconds": str(self.slow_seconds)}
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    args = p.parse_args()
    with FakeChatServer(port=args.port, latency=args.latency) as server:
        print(f"fake_chat_server: listening on {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            server.thread.join()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
