"""Recording fakes of the two LLM wire formats that cannot run here (named as fakes on purpose).

- :class:`ChatCompletions`: an OpenAI-compatible ``POST /chat/completions`` endpoint;
- :class:`Converse`: Bedrock's ``POST /model/{modelId}/converse`` (what boto3 sends when its
  ``endpoint_url`` points here).

Each answers from a script: a callable taking (request number, parsed body, headers) and
returning (status, headers, body). They record every request and the peak number in flight.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

Reply = tuple[int, dict[str, str], Any]


class Recorder:
    def __init__(self, script: Callable[[int, dict, dict], Reply], delay_s: float = 0.0):
        self.script, self.delay_s = script, delay_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                with rec.lock:
                    n = len(rec.requests)
                    rec.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    rec.in_flight += 1
                    rec.peak = max(rec.peak, rec.in_flight)
                try:
                    if rec.delay_s:
                        time.sleep(rec.delay_s)
                    status, headers, payload = rec.script(n, body, dict(self.headers))
                finally:
                    with rec.lock:
                        rec.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", headers.pop("content-type", "application/json"))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def chat_reply(content: str, prompt_tokens: int = 50, completion_tokens: int = 20, finish: str = "stop") -> Reply:
    return 200, {}, {
        "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def converse_reply(*, tool_input: Any = None, text: str | None = None, input_tokens: int = 40,
                   output_tokens: int = 12, stop: str | None = None) -> Reply:
    content = []
    if tool_input is not None:
        content.append({"toolUse": {"toolUseId": "tooluse_1", "name": "emit_output", "input": tool_input}})
    if text is not None:
        content.append({"text": text})
    return 200, {}, {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop or ("tool_use" if tool_input is not None else "end_turn"),
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": 5},
    }


def aws_error(status: int, code: str, message: str, retry_after: str | None = None) -> Reply:
    headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, {"message": message}
