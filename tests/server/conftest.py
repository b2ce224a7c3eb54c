"""Fixtures for the server tests: `pixtral serve` on the demo model, started on a free loopback port and stopped
by the tests themselves (scripts/test-server.sh runs them; PIXTRAL_BIN names the binary)."""

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PIXTRAL_BIN", ROOT / "target" / "release" / "pixtral"))
DEMO = ROOT / "examples" / "demo" / "pixtral-demo.gguf"
KEY = "sk-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `pixtral serve` process; `url` is its base address."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(ROOT / "target" / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "-m", str(DEMO), "--port", str(self.port), "-t", "2", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.time() + 60
        while True:
            assert self.proc.poll() is None, f"the server exited: {self.output()}"
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the server did not become ready in 60 s"
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def metric(self, name: str, headers=None) -> float:
        text = httpx.get(self.url + "/metrics", headers=headers or {}).text
        for line in text.splitlines():
            if line.startswith(f"pixtral_{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    """Four slots, no key: the API, concurrency and bad-input tests."""
    s = Server("--parallel", "4", "--media-dir", str(ROOT / "examples"), "--body-limit", str(8 << 20))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed():
    """One slot and no queue, an API key, CORS for one origin, remote images up to 20 kB."""
    s = Server(
        "--api-key", KEY, "--max-queue", "0", "--cors-origin", "http://app.example", "--allow-remote-media",
        "--image-bytes", "20000",
    )
    yield s
    s.stop()


def pixtral_run(*args: str) -> str:
    """The answer of `pixtral run` on the demo model (stdout)."""
    out = subprocess.run(
        [str(BIN), "run", "-m", str(DEMO), "-t", "2", *args], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return out.stdout
