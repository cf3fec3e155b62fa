"""End to end, for real: build the serving image, run it with docker-compose, score over loopback.

Opt-in (it needs root, Debian's docker.io + docker-compose + debootstrap, and a few minutes):

    DOCKER_TESTS=1 python -m pytest tests/docker/test_containers.py      (or: make docker-test)

It starts dockerd if none is running, builds the debootstrap base image and the wheelhouse if
they are missing, builds the serving and client images under test-only tags, runs
`docker-compose up -d server` (host network, free loopback ports) and waits for Docker's own
health status to turn healthy. Reviews are then scored from the host with the client CLI, with
tritonclient (KServe v2) and, in a container, with the `scorer` service of the `score` profile,
and every answer is compared with in-process ONNX Runtime on the same model repository. At the
end it removes everything it created, in reverse order, and stops the dockerd it started;
KEEP_DOCKER_IMAGES=1 keeps the base image and the wheelhouse for the next run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.docker.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DOCKER_TESTS") != "1",
                       reason="container test: set DOCKER_TESTS=1 (make docker-test); needs root and docker.io"),
]

BASE_IMAGE = os.environ.get("BASE_IMAGE", "imdb-edge/python:3.11-bookworm")
MODEL_NAME = "imdb-lstm"
MODELS = REPO_ROOT / "models"
WHEELHOUSE = REPO_ROOT / "docker" / ".build" / "wheelhouse"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"
BUILD_STAGE_LABEL = "imdb-edge.stage=build"
HEALTHY_TIMEOUT_S = 180
CRAFTED = [
    "A wonderful, moving film.<br /><br />The acting is superb and the score is beautiful.",
    "Dull, predictable and far too long. I want those two hours back.",
    "Not bad.",
    "I expected to hate it. I did not: it is funny, clever and kind, one of the best this year.",
    "Ünïcödé, émojis 🎬 and <i>markup</i> aside, this was a forgettable, lazy sequel.",
    "great " * 600,  # far beyond the model's max_tokens: head+tail truncation
    "!!!",           # no word at all: a single unknown token
]


def log(message: str) -> None:
    print(f"[docker-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 900, check: bool = True,
        cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its output (builds are long: no streaming)."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker_ready() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def build_stage_images() -> set[str]:
    out = run("docker", "images", "--quiet", "--no-trunc", "--filter", f"label={BUILD_STAGE_LABEL}").stdout
    return set(out.split())


@contextlib.contextmanager
def timed(phase: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    log(f"{phase} ...")
    yield
    timings[phase] = round(time.monotonic() - start, 1)
    log(f"{phase}: {timings[phase]} s")


def start_dockerd(stack: contextlib.ExitStack, workdir: Path) -> None:
    """Start dockerd in the background unless one answers; stop only the one started here."""
    if docker_ready():
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("no Docker daemon answers and dockerd cannot be started here (needs root and docker.io)")
    logfile = (workdir / "dockerd.log").open("w")
    daemon = subprocess.Popen(["dockerd"], stdout=logfile, stderr=subprocess.STDOUT)

    def stop() -> None:
        daemon.terminate()
        daemon.wait(timeout=60)
        logfile.close()
        log("stopped the dockerd this test started")

    stack.callback(stop)
    deadline = time.monotonic() + 60
    while not docker_ready():
        if daemon.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"dockerd did not come up; see {workdir / 'dockerd.log'}")
        time.sleep(0.5)
    log(f"started dockerd (pid {daemon.pid})")


def ensure_base_image(stack: contextlib.ExitStack, keep: bool) -> None:
    if image_exists(BASE_IMAGE):
        return
    run("bash", "docker/build-base.sh", BASE_IMAGE, timeout=900)
    if not keep:
        stack.callback(run, "docker", "rmi", BASE_IMAGE, check=False)


def ensure_wheelhouse(stack: contextlib.ExitStack, group: str, keep: bool) -> None:
    folder = WHEELHOUSE / group
    if (folder / "requirements.txt").exists():
        return
    run("bash", "docker/wheelhouse.sh", group, timeout=900)
    if not keep:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)


def build_image(stack: contextlib.ExitStack, tag: str, dockerfile: str, *build_args: str) -> None:
    """docker build with the classic builder (what Debian's docker.io and docker-compose use)."""
    before = build_stage_images()
    stack.callback(remove_new_build_stages, before)
    stack.callback(run, "docker", "rmi", tag, check=False)
    args = [a for arg in (f"BASE_IMAGE={BASE_IMAGE}", *build_args) for a in ("--build-arg", arg)]
    run("docker", "build", "--network", "host", "--file", dockerfile, "--tag", tag, *args, ".",
        env={"DOCKER_BUILDKIT": "0"})


def remove_new_build_stages(before: set[str]) -> None:
    for image in build_stage_images() - before:
        run("docker", "rmi", image, check=False)


@dataclass(frozen=True)
class Stack:
    project: str
    env: dict[str, str]
    grpc: str
    metrics_port: int
    container: str
    timings: dict[str, float]
    cleanup: contextlib.ExitStack
    keep: bool

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return run("docker-compose", "--project-name", self.project, *args, env=self.env, check=check,
                   timeout=timeout)


def wait_healthy(container: str) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    status = "?"
    while time.monotonic() < deadline:
        state = json.loads(run("docker", "inspect", "--format", "{{json .State}}", container).stdout)
        status = state.get("Health", {}).get("Status", "none")
        if status == "healthy":
            return
        if not state["Running"]:
            break
        time.sleep(1)
    logs = run("docker", "logs", "--tail", "50", container, check=False)
    pytest.fail(f"server container is {status!r}, not healthy:\n{logs.stdout}\n{logs.stderr}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    if not (MODELS / MODEL_NAME).is_dir():
        pytest.fail(f"no shipped model repository at {MODELS / MODEL_NAME}: the image bakes it in")
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found (apt-get install docker.io docker-compose debootstrap)")
    keep = os.environ.get("KEEP_DOCKER_IMAGES") == "1"
    workdir = tmp_path_factory.mktemp("docker")
    timings: dict[str, float] = {}
    suffix = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as cleanup:
        started = time.monotonic()
        cleanup.callback(lambda: log(f"total {time.monotonic() - started:.1f} s; phases {timings}"))
        with timed("dockerd", timings):
            start_dockerd(cleanup, workdir)
        with timed("base image", timings):
            ensure_base_image(cleanup, keep)
        with timed("wheelhouse", timings):
            ensure_wheelhouse(cleanup, "serve", keep)
            ensure_wheelhouse(cleanup, "client", keep)
        serve_image, client_image = f"imdb-edge/serve:test-{suffix}", f"imdb-edge/client:test-{suffix}"
        with timed("build serving image", timings):
            build_image(cleanup, serve_image, "docker/serve.Dockerfile", "REQUIREMENTS=serve")
        with timed("build client image", timings):
            build_image(cleanup, client_image, "docker/serve.Dockerfile", "REQUIREMENTS=client")
        score_dir = workdir / "score"
        score_dir.mkdir()
        os.chmod(score_dir, 0o777)  # the scorer runs as the images' uid 10001
        grpc_port, metrics_port = free_port(), free_port()
        data = Path(os.environ.get("IMDB_DATA", DEFAULT_DATA))
        env = {"SERVE_IMAGE": serve_image, "CLIENT_IMAGE": client_image, "BASE_IMAGE": BASE_IMAGE,
               "TRAIN_IMAGE": f"imdb-edge/train:test-{suffix}", "IMDB_DATA_DIR": str(data.parent),
               "IMDB_DATA_FILE": data.name,
               "SENTIMENT_PORT": str(grpc_port), "SENTIMENT_METRICS_PORT": str(metrics_port),
               "SENTIMENT_HTTP_PORT": str(free_port()),
               "SENTIMENT_HOST": "127.0.0.1", "HEALTHCHECK_INTERVAL": "2s", "SCORE_DIR": str(score_dir)}
        project = f"imdbtest{suffix}"
        partial = Stack(project, env, f"127.0.0.1:{grpc_port}", metrics_port, "", timings, cleanup, keep)
        # Containers, the named volumes (models, runs) and anything the score profile started.
        cleanup.callback(partial.compose, "--profile", "score", "down", "--volumes", "--remove-orphans",
                         check=False)
        with timed("compose up + healthy", timings):
            partial.compose("up", "--detach", "--no-build", "server")
            container = partial.compose("ps", "--quiet", "server").stdout.strip()
            wait_healthy(container)
        yield dataclasses.replace(partial, container=container)


def read_reviews(limit: int = 48) -> list[str]:
    """Real reviews from the test split (both labels), then the crafted edge cases."""
    path = Path(os.environ.get("IMDB_DATA", DEFAULT_DATA))
    if not path.exists():
        pytest.fail(f"IMDB data not found at {path} (set IMDB_DATA)")
    found: dict[str, list[str]] = {"pos": [], "neg": []}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in found \
                    and len(found[parts[2]]) < limit // 2:
                found[parts[2]].append(archive.extractfile(member).read().decode("utf-8"))
            if all(len(v) >= limit // 2 for v in found.values()):
                break
    return found["pos"] + found["neg"] + CRAFTED


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    return read_reviews()


@pytest.fixture(scope="module")
def in_process(reviews) -> tuple[np.ndarray, list[str]]:
    """P(positive) and labels from ONNX Runtime in this process, on the repository the image baked in."""
    from runtime.preprocessing import encode_texts, pad_batch
    from runtime.repository import load_version, open_session

    model = load_version(MODELS, MODEL_NAME)
    session = open_session(model, "fp32")
    ids = encode_texts(model.load_tokenizer(), reviews, model.max_tokens, model.head_tokens, model.unk_id)
    probabilities = []
    for seq in ids:  # one at a time: no padding at all, the plainest reference
        input_ids, lengths = pad_batch([seq], model.pad_id)
        (output,) = session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})
        probabilities.append(float(output[0]))
    negative, positive = model.labels
    labels = [positive if p >= model.threshold else negative for p in probabilities]
    return np.array(probabilities, dtype=np.float64), labels


def test_container_is_hardened(stack: Stack):
    config = json.loads(run("docker", "inspect", stack.container).stdout)[0]
    host = config["HostConfig"]
    assert config["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "host"
    assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["RestartPolicy"]["Name"] == "unless-stopped"
    denied = run("docker", "exec", stack.container, "python", "-c", "open('/app/x', 'w')", check=False)
    assert denied.returncode != 0 and ("Read-only file system" in denied.stderr or "Permission" in denied.stderr)
    no_torch = run("docker", "exec", stack.container, "python", "-c",
                   "import importlib.util as u; print(u.find_spec('torch'))")
    assert no_torch.stdout.strip() == "None"


def test_client_cli_from_the_host(stack: Stack, reviews, in_process):
    health = run(sys.executable, "-m", "client", "--server", stack.grpc, "health")
    assert health.stdout.strip() == "SERVING"
    result = run(sys.executable, "-m", "client", "--server", stack.grpc, "predict", "--json", *reviews)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    expected_p, expected_labels = in_process
    assert [a["text"] for a in answers] == reviews
    assert {a["model"] for a in answers} == {MODEL_NAME}
    np.testing.assert_allclose([a["probability"] for a in answers], expected_p, rtol=0, atol=1e-5)
    assert [a["label"] for a in answers] == expected_labels
    # A real model, not a constant: the reviews get both labels.
    assert set(expected_labels) == {"negative", "positive"}


def test_tritonclient_kserve_v2_from_the_host(stack: Stack, reviews, in_process):
    import tritonclient.grpc as triton

    with contextlib.closing(triton.InferenceServerClient(url=stack.grpc)) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL_NAME)
        text = triton.InferInput("text", [len(reviews)], "BYTES")
        text.set_data_from_numpy(np.array([r.encode("utf-8") for r in reviews], dtype=np.object_))
        outputs = [triton.InferRequestedOutput("probability"), triton.InferRequestedOutput("label")]
        result = client.infer(MODEL_NAME, [text], outputs=outputs)
    expected_p, expected_labels = in_process
    assert result.as_numpy("probability").dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("probability"), expected_p, rtol=0, atol=1e-5)
    assert [label.decode() for label in result.as_numpy("label")] == expected_labels


def test_scorer_profile_scores_a_mounted_file(stack: Stack, reviews, in_process):
    score_dir = Path(stack.env["SCORE_DIR"])
    with (score_dir / "reviews.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review"])
        writer.writerows(enumerate(reviews))
    with timed("scorer run", stack.timings):
        stack.compose("--profile", "score", "run", "--rm", "scorer")
    with (score_dir / "scored.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected_p, expected_labels = in_process
    assert [r["review"] for r in rows] == reviews and [int(r["id"]) for r in rows] == list(range(len(reviews)))
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected_p, rtol=0, atol=1e-5)
    assert [r["label"] for r in rows] == expected_labels


def scrape_texts_total(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert response.status == 200 and "sentiment_model_ready 1.0" in text
    (line,) = [line for line in text.splitlines() if line.startswith("sentiment_texts_total ")]
    return float(line.split()[1])


def test_metrics_endpoint_counts_the_texts(stack: Stack, reviews):
    """Prometheus on the metrics port, as a scraper on the host sees it."""
    before = scrape_texts_total(stack.metrics_port)
    run(sys.executable, "-m", "client", "--server", stack.grpc, "predict", *reviews[:5])
    assert scrape_texts_total(stack.metrics_port) - before == 5


def predict_json(stack: Stack, texts: list[str]) -> list[dict]:
    result = run(sys.executable, "-m", "client", "--server", stack.grpc, "predict", "--json", *texts)
    return [json.loads(line) for line in result.stdout.splitlines()]


def in_process_version(version_dir: Path, texts: list[str]) -> np.ndarray:
    from runtime.preprocessing import encode_texts, pad_batch
    from runtime.repository import load_version, open_session

    model = load_version(version_dir.parent.parent, MODEL_NAME, int(version_dir.name))
    session = open_session(model, "fp32")
    ids = encode_texts(model.load_tokenizer(), texts, model.max_tokens, model.head_tokens, model.unk_id)
    input_ids, lengths = pad_batch(ids, model.pad_id)
    (output,) = session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})
    return output.astype(np.float64)


@pytest.mark.skipif(os.environ.get("DOCKER_TRAIN_TESTS") != "1",
                    reason="trainer profile: set DOCKER_TRAIN_TESTS=1 too (builds the PyTorch image, trains)")
def test_trainer_profile_exports_a_version_the_server_serves_after_restart(stack: Stack, reviews, tmp_path):
    """Train (a short smoke run) and export into the shared volume, restart, get the new version."""
    (served_before,) = {a["version"] for a in predict_json(stack, reviews[:3])}
    with timed("wheelhouse train", stack.timings):
        ensure_wheelhouse(stack.cleanup, "train", stack.keep)
    with timed("build training image", stack.timings):
        build_image(stack.cleanup, stack.env["TRAIN_IMAGE"], "docker/train.Dockerfile")
    with timed("trainer run", stack.timings):
        stack.compose("--profile", "train", "run", "--rm", "-e",
                      "EXPORT_ARGS=--eval-limit 200 --parity-limit 50 --bench-texts 50", "trainer",
                      "--preset", "smoke", "--epochs", "1", "--train-limit", "1000", timeout=1800)
    new_version = served_before + 1
    with timed("restart server", stack.timings):
        stack.compose("restart", "server")
        wait_healthy(stack.container)
    answers = predict_json(stack, reviews)
    assert {a["version"] for a in answers} == {new_version}, answers[:1]
    # The exported version, copied out of the shared volume, scored in this process.
    (tmp_path / MODEL_NAME).mkdir()
    run("docker", "cp", f"{stack.container}:/models/{MODEL_NAME}/{new_version}",
        str(tmp_path / MODEL_NAME / str(new_version)))
    expected = in_process_version(tmp_path / MODEL_NAME / str(new_version), reviews)
    np.testing.assert_allclose([a["probability"] for a in answers], expected, rtol=0, atol=1e-5)
