"""TLS, mutual TLS, bearer tokens, the metrics bind address and loader safety (docs/security.md).

Real servers on loopback with throwaway certificates (tests/fixtures/certs.py); the client
library, the batch scorer's server backend and the client CLI (as a subprocess) on the other side.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.__main__ import main
from client.api import Security, SentimentClient, read_token
from client.backends import ServerBackend
from protos.inference import grpc_predict_v2_pb2 as kserve_pb
from protos.inference import grpc_predict_v2_pb2_grpc as kserve_grpc
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from runtime.repository import RepositoryError, load_version, open_session
from serve.ops.errors import ConfigurationError
from serve.ops.security import TokenChecker, read_tokens
from serve.ops.settings import Settings, load_settings
from serve.server import create_server
from tests.client.helpers import read_rows, write_rows
from tests.conftest import REPO_ROOT
from tests.docker.conftest import DOCKER_DIR
from tests.fixtures.certs import Pki, make_pki
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.serve.test_process import ServeProcess, env

TIMEOUT = 10.0
# Distinctive values, so finding them anywhere in logs or metrics is unambiguous.
TOKEN = "tok-0123456789abcdef-right"
OTHER_TOKEN = "tok-fedcba9876543210-second"
WRONG_TOKEN = "tok-5555555555555555-wrong"
CLIENT_OPTIONS = [("grpc.max_reconnect_backoff_ms", 200)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(f"# serving tokens\n\n{TOKEN}\n  {OTHER_TOKEN}  \n")
    return path


@pytest.fixture(scope="module")
def guarded(repository: Path, pki: Pki, token_file: Path) -> Iterator[ServerThread]:
    """TLS and token auth."""
    running = ServerThread(make_settings(repository, tls_cert=pki.server.cert, tls_key=pki.server.key,
                                         auth_token_file=token_file))
    yield running
    running.close()


@pytest.fixture(scope="module")
def mutual(repository: Path, pki: Pki) -> Iterator[ServerThread]:
    """Mutual TLS: clients need a certificate from the test CA."""
    running = ServerThread(make_settings(repository, tls_cert=pki.server.cert, tls_key=pki.server.key,
                                         tls_client_ca=pki.ca))
    yield running
    running.close()


def tls_channel(address: str, root: Path, client: tuple[Path, Path] | None = None,
                server_name: str | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root.read_bytes(), *((client[1].read_bytes(), client[0].read_bytes()) if client else (None, None)))
    options = [*CLIENT_OPTIONS, *([("grpc.ssl_target_name_override", server_name)] if server_name else [])]
    return grpc.secure_channel(address, credentials, options)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def health_of(channel: grpc.Channel) -> int:
    """The server's overall health status, asked without any token."""
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll (bounded): the server logs a call just after its status went out to the client."""
    until = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < until, "condition not met in time"
        time.sleep(0.01)


def refused_code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# -- TLS


def test_tls_serves_sentiment_kserve_and_health(guarded: ServerThread, pki: Pki) -> None:
    with tls_channel(guarded.address, pki.ca) as channel:
        assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
        reply = pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(text="a wonderful film"),
                                                              timeout=TIMEOUT, metadata=bearer(TOKEN))
        assert reply.prediction.label in ("positive", "negative") and reply.model.name == "imdb-lstm"
        kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
        assert kserve.ModelReady(kserve_pb.ModelReadyRequest(name="imdb-lstm"), timeout=TIMEOUT,
                                 metadata=bearer(TOKEN)).ready


def test_plaintext_client_and_untrusting_client_cannot_talk_to_a_tls_port(guarded: ServerThread, pki: Pki) -> None:
    with grpc.insecure_channel(guarded.address, CLIENT_OPTIONS) as plaintext:
        assert refused_code(lambda: health_of(plaintext)) == grpc.StatusCode.UNAVAILABLE
    with tls_channel(guarded.address, pki.untrusted_ca) as untrusting:  # server cert not from this CA
        assert refused_code(lambda: health_of(untrusting)) == grpc.StatusCode.UNAVAILABLE


def test_the_server_name_must_match_its_certificate(guarded: ServerThread, pki: Pki) -> None:
    with tls_channel(guarded.address, pki.ca, server_name="localhost") as channel:
        assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
    with tls_channel(guarded.address, pki.ca, server_name="elsewhere.example") as channel:
        assert refused_code(lambda: health_of(channel)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(mutual: ServerThread, pki: Pki) -> None:
    with tls_channel(mutual.address, pki.ca) as anonymous:
        assert refused_code(lambda: health_of(anonymous)) == grpc.StatusCode.UNAVAILABLE
    untrusted = (pki.untrusted_client.cert, pki.untrusted_client.key)
    with tls_channel(mutual.address, pki.ca, untrusted) as stranger:
        assert refused_code(lambda: health_of(stranger)) == grpc.StatusCode.UNAVAILABLE
    with SentimentClient(mutual.address, security=Security(ca_file=pki.ca, cert_file=pki.client.cert,
                                                           key_file=pki.client.key)) as client:
        assert client.health() == "SERVING"
        assert client.predict("great fun").model == "imdb-lstm"


# -- tokens


def test_calls_without_the_right_token_are_unauthenticated(guarded: ServerThread, pki: Pki) -> None:
    with tls_channel(guarded.address, pki.ca) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        request = pb.PredictRequest(text="great")
        for metadata, message in ((None, "missing credentials"), (bearer(WRONG_TOKEN), "invalid token"),
                                  ((("authorization", f"Basic {TOKEN}"),), "expected 'Bearer <token>'"),
                                  (bearer(TOKEN) + bearer(TOKEN), "exactly one")):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=TIMEOUT, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in caught.value.details()
            assert TOKEN not in caught.value.details() and WRONG_TOKEN not in caught.value.details()
        # Every handler shape is guarded: streaming, and the KServe API.
        stream = stub.PredictStream(iter([pb.PredictStreamRequest(id="a", texts=["great"])]), timeout=TIMEOUT,
                                    metadata=bearer(WRONG_TOKEN))
        assert refused_code(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED
        kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
        assert refused_code(lambda: kserve.ServerReady(kserve_pb.ServerReadyRequest(), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAUTHENTICATED
        # Any configured token works; the scheme name is case-insensitive.
        assert stub.Predict(request, timeout=TIMEOUT, metadata=bearer(TOKEN)).prediction.label
        assert stub.Predict(request, timeout=TIMEOUT,
                            metadata=(("authorization", f"bearer {OTHER_TOKEN}"),)).prediction.label


def test_health_and_reflection_need_no_token(guarded: ServerThread, pki: Pki) -> None:
    with tls_channel(guarded.address, pki.ca) as channel:
        assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
        services = {s.name for s in replies[0].list_services_response.service}
        assert "sentiment.v1.SentimentService" in services
        # Reflection v1 (what current grpcurl asks first) is as open; same wire format as v1alpha.
        v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        replies = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
        assert "sentiment.v1.SentimentService" in {s.name for s in replies[0].list_services_response.service}


def test_tokens_stay_out_of_logs_and_metrics_and_refusals_are_counted(
        guarded: ServerThread, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="serve")  # debug: one access-log line per RPC
    with SentimentClient(guarded.address, security=Security(ca_file=pki.ca, token=TOKEN)) as client:
        client.predict("great")
    with SentimentClient(guarded.address, security=Security(ca_file=pki.ca, token=WRONG_TOKEN)) as client:
        assert refused_code(lambda: client.predict("great")) == grpc.StatusCode.UNAUTHENTICATED
    wait_until(lambda: any(getattr(r, "code", None) == "UNAUTHENTICATED" for r in caplog.records))
    logged = json.dumps([vars(record) for record in caplog.records], default=str)
    assert "/sentiment.v1.SentimentService/Predict" in logged
    page = urllib.request.urlopen(f"http://127.0.0.1:{guarded.server.metrics_port}/metrics",
                                  timeout=TIMEOUT).read().decode()
    assert re.search(r'sentiment_requests_total\{code="UNAUTHENTICATED",'
                     r'method="/sentiment.v1.SentimentService/Predict"\} [1-9]', page), page
    for secret in (TOKEN, OTHER_TOKEN, WRONG_TOKEN):
        assert secret not in logged and secret not in page
        assert secret not in json.dumps(guarded.settings.as_dict()) and secret not in repr(guarded.settings)
    assert TOKEN not in repr(Security(token=TOKEN))


def test_the_batch_scorer_reaches_a_guarded_server(guarded: ServerThread, pki: Pki, token_file: Path) -> None:
    backend = ServerBackend(guarded.address, batch_size=2, concurrency=2,
                            security=Security(ca_file=pki.ca, token=read_token(token_file)))
    try:
        probabilities, labels, errors, _ = backend.score(["great", "awful", "a fine film"])
        assert len(probabilities) == 3 and all(labels) and errors == [None] * 3
        assert backend.describe()["model"] == "imdb-lstm"
    finally:
        backend.close()


def test_token_comparison_checks_every_token(token_file: Path) -> None:
    assert read_tokens(token_file) == [TOKEN, OTHER_TOKEN]
    checker = TokenChecker([TOKEN, OTHER_TOKEN])
    assert checker.refusal([("authorization", f"Bearer {OTHER_TOKEN}")]) is None
    assert checker.refusal([("authorization", f"Bearer {OTHER_TOKEN}x")]) == "invalid token"
    assert checker.refusal([("authorization", "Bearer ")]) is not None
    assert checker.refusal([("other", "value")]).startswith("missing credentials")


@pytest.mark.parametrize(("content", "needle"), [
    ("# only a comment\n\n", "holds no token"),
    (f"Bearer {TOKEN}\n", "line 1: a token is one word"),
])
def test_unusable_token_files_are_refused_without_echoing_them(tmp_path: Path, repository: Path,
                                                               content: str, needle: str) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=needle) as caught:
        create_server(make_settings(repository, auth_token_file=path))
    assert TOKEN not in str(caught.value)


def test_unusable_tls_files_are_refused_with_the_reason(repository: Path, pki: Pki) -> None:
    for cert, key, client_ca, needle in (
            (pki.server.cert, pki.client.key, None, "the private key does not belong to the certificate"),
            (pki.server.key, pki.server.key, None, "expected a PEM certificate chain"),
            (pki.server.cert, pki.server.key, pki.server.key, "--tls-client-ca .* no PEM CA certificate")):
        settings = make_settings(repository, tls_cert=cert, tls_key=key, tls_client_ca=client_ca)
        with pytest.raises(ConfigurationError, match=needle):
            create_server(settings)


# -- settings and the metrics bind address


def test_security_settings_come_from_flags_and_env(pki: Pki, token_file: Path) -> None:
    settings = load_settings(["--tls-cert", str(pki.server.cert)], {
        "SENTIMENT_TLS_KEY": str(pki.server.key), "SENTIMENT_TLS_CLIENT_CA": str(pki.ca),
        "SENTIMENT_AUTH_TOKEN_FILE": str(token_file), "SENTIMENT_METRICS_HOST": "0.0.0.0"})
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (pki.server.cert, pki.server.key, pki.ca)
    assert settings.auth_token_file == token_file and settings.metrics_bind_host == "0.0.0.0"
    assert settings.as_dict()["auth_token_file"] == str(token_file)
    off = load_settings([], {"SENTIMENT_TLS_CERT": "", "SENTIMENT_AUTH_TOKEN_FILE": " "})
    assert off.tls_cert is None and off.auth_token_file is None and not off.tls


@pytest.mark.parametrize(("fields", "needle"), [
    ({"tls_cert": "server.pem"}, "--tls-cert and --tls-key go together"),
    ({"tls_key": "server.key"}, "--tls-cert and --tls-key go together"),
    ({"tls_client_ca": "ca.pem"}, "--tls-client-ca (mutual TLS) needs TLS itself"),
    ({"auth_token_file": "missing.txt"}, "--auth-token-file .*missing.txt (SENTIMENT_AUTH_TOKEN_FILE): cannot read"),
    ({"tls_cert": "server.pem", "tls_key": "."}, "--tls-key .* cannot read it"),
])
def test_inconsistent_or_unreadable_security_settings_are_refused(pki: Pki, fields: dict, needle: str) -> None:
    folder = pki.ca.parent
    values = {name: folder / value for name, value in fields.items()}
    with pytest.raises(ConfigurationError, match=re.escape(needle).replace(r"\.\*", ".*")):
        Settings(**values)


def test_metrics_bind_host_defaults_to_loopback_once_tls_or_tokens_are_on(pki: Pki, token_file: Path) -> None:
    tls = {"tls_cert": pki.server.cert, "tls_key": pki.server.key}
    assert Settings(host="0.0.0.0").metrics_bind_host == "0.0.0.0"
    assert Settings(host="0.0.0.0", **tls).metrics_bind_host == "127.0.0.1"
    assert Settings(host="0.0.0.0", auth_token_file=token_file).metrics_bind_host == "127.0.0.1"
    assert Settings(host="0.0.0.0", metrics_host="0.0.0.0", **tls).metrics_bind_host == "0.0.0.0"


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    except OSError:
        return False
    return True


def test_the_server_binds_metrics_where_settings_say(repository: Path, token_file: Path) -> None:
    # gRPC on 127.0.0.2 (still loopback) so that the metrics default of 127.0.0.1 is distinguishable.
    running = ServerThread(make_settings(repository, host="127.0.0.2", auth_token_file=token_file), load=False)
    try:
        port = running.server.metrics_port
        assert reachable("127.0.0.1", port) and not reachable("127.0.0.2", port)
    finally:
        running.close()
    explicit = make_settings(repository, host="127.0.0.2", auth_token_file=token_file, metrics_host="127.0.0.2")
    running = ServerThread(explicit, load=False)
    try:
        port = running.server.metrics_port
        assert reachable("127.0.0.2", port) and not reachable("127.0.0.1", port)
    finally:
        running.close()


# -- loader safety


@pytest.mark.parametrize("name", ["../imdb-lstm", "..", "/etc", "imdb-lstm/../../etc", "a/b"])
def test_model_names_cannot_escape_the_repository(repository: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        load_version(repository, name)


def test_serving_code_never_unpickles() -> None:
    """No module on the serving path imports a pickle-based loader or calls numpy.load."""
    banned_imports = {"pickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "torch"}
    offenders = []
    for path in [*(REPO_ROOT / "serve").rglob("*.py"), *(REPO_ROOT / "runtime").rglob("*.py"),
                 REPO_ROOT / "client" / "backends.py"]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: import {n}" for n in names if n.split(".")[0] in banned_imports]
            if isinstance(node, ast.Attribute) and node.attr == "load" and \
                    isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy"):
                offenders.append(f"{path.name}:{node.lineno}: numpy.load")
    assert offenders == []


def test_loading_and_running_a_version_unpickles_nothing(repository: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled data from the model repository")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    model = load_version(repository, "imdb-lstm")
    session = open_session(model, "fp32")
    assert session.get_outputs()[0].name == "probability"


# -- the client CLI against a real `python -m serve` process


def test_client_cli_over_tls_with_a_token_file(repository: Path, pki: Pki, token_file: Path,
                                               tmp_path: Path) -> None:
    process = ServeProcess(["--model-repository", str(repository), "--port", "0", "--metrics-port", "0",
                            "--http-port", "0", "--intra-op-threads", "1", "--log-level", "debug"],
                           SENTIMENT_TLS_CERT=str(pki.server.cert), SENTIMENT_TLS_KEY=str(pki.server.key),
                           SENTIMENT_AUTH_TOKEN_FILE=str(token_file))
    try:
        port = re.search(r":(\d+)$", process.wait_log("listening")["address"]).group(1)
        process.wait_log("serving")
        server = f"localhost:{port}"
        client_token = tmp_path / "client-token"
        client_token.write_text(f"# mine\n{OTHER_TOKEN}\n")

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "client", *args], cwd=REPO_ROOT, env=env(),
                                  capture_output=True, text=True, timeout=60)

        done = cli("predict", "a wonderful film", "--json", "--server", server, "--tls-ca", str(pki.ca),
                   "--token-file", str(client_token))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model"] == "imdb-lstm"
        health = cli("--tls-ca", str(pki.ca), "health", "--server", server)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
        refused = cli("predict", "great", "--server", server, "--tls-ca", str(pki.ca))
        assert refused.returncode == 1 and "UNAUTHENTICATED: missing credentials" in refused.stderr
        wait_until(lambda: any(line.get("code") == "UNAUTHENTICATED" for line in list(process.lines)))
    finally:
        process.kill()
    logged = json.dumps(process.lines)
    assert str(token_file) in logged and "/sentiment.v1.SentimentService/Predict" in logged  # settings, access log...
    assert TOKEN not in logged and OTHER_TOKEN not in logged           # ...the tokens are not


def test_client_cli_scores_a_file_through_a_guarded_server(guarded: ServerThread, pki: Pki, token_file: Path,
                                                          tmp_path: Path, capsys) -> None:
    reviews = write_rows(tmp_path / "reviews.csv", [{"id": i, "review": text} for i, text in
                                                     enumerate(["great fun", "a dull mess", "loved it"])])
    secured = ["--server", guarded.address, "--tls-ca", str(pki.ca), "--token-file", str(token_file)]
    assert main(["score", str(reviews), "--output", str(tmp_path / "scored.csv"), "--no-progress", *secured]) == 0
    assert [row["id"] for row in read_rows(tmp_path / "scored.csv")] == ["0", "1", "2"]
    assert main(["score", str(reviews), "--output", str(tmp_path / "bare.csv"), "--no-progress",
                 "--server", guarded.address, "--tls-ca", str(pki.ca)]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # TLS flags mean nothing to in-process scoring: say so
        main(["score", str(reviews), "--output", str(tmp_path / "local.csv"), "--local", "models/imdb-lstm",
              "--tls-ca", str(pki.ca)])


def test_client_security_options_are_checked(pki: Pki) -> None:
    with pytest.raises(ValueError, match="--tls-cert and --tls-key"):
        Security(ca_file=pki.ca, cert_file=pki.client.cert)
    with pytest.raises(ValueError, match="server name needs TLS"):
        Security(server_name="localhost")
    with pytest.raises(ValueError, match="cannot read the CA certificate"):
        SentimentClient("127.0.0.1:1", security=Security(ca_file=pki.ca.parent / "missing.pem"))
    assert Security(tls=True).channel_credentials() is not None and Security().channel_credentials() is None


# -- docker/healthcheck.py, run as the image runs it: a subprocess with the server's SENTIMENT_* settings


def healthcheck_run(port: int, **environ: str | Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTIMENT_", "HEALTHCHECK_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), SENTIMENT_PORT=str(port), HEALTHCHECK_TIMEOUT_S="5",
               **{k: str(v) for k, v in environ.items()})
    return subprocess.run([sys.executable, str(DOCKER_DIR / "healthcheck.py")], env=env, capture_output=True,
                          text=True, timeout=60)


def test_container_healthcheck_on_a_plaintext_server(server: ServerThread) -> None:
    done = healthcheck_run(server.port)
    assert (done.returncode, done.stdout.strip()) == (0, f"127.0.0.1:{server.port}: SERVING")


def test_container_healthcheck_speaks_tls_to_a_tls_server(guarded: ServerThread, pki: Pki) -> None:
    server_tls = {"SENTIMENT_TLS_CERT": pki.server.cert, "SENTIMENT_TLS_KEY": pki.server.key}
    done = healthcheck_run(guarded.port, **server_tls, HEALTHCHECK_TLS_CA=pki.ca)
    assert done.returncode == 0 and done.stdout.strip().endswith("SERVING"), done.stderr
    done = healthcheck_run(guarded.port, **server_tls, HEALTHCHECK_TLS_CA=pki.ca,
                           HEALTHCHECK_TLS_SERVER_NAME="localhost")
    assert done.returncode == 0, done.stderr
    # A CA that did not sign the server's certificate: unhealthy, never a silent pass.
    done = healthcheck_run(guarded.port, **server_tls, HEALTHCHECK_TLS_CA=pki.untrusted_ca)
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr
    # Without the TLS settings the check speaks plaintext and fails against a TLS port.
    assert healthcheck_run(guarded.port).returncode == 1


def test_container_healthcheck_presents_a_client_certificate_under_mutual_tls(mutual: ServerThread, pki: Pki) -> None:
    server_tls = {"SENTIMENT_TLS_CERT": pki.server.cert, "SENTIMENT_TLS_KEY": pki.server.key,
                  "SENTIMENT_TLS_CLIENT_CA": pki.ca, "HEALTHCHECK_TLS_CA": pki.ca}
    done = healthcheck_run(mutual.port, **server_tls, HEALTHCHECK_TLS_CERT=pki.client.cert,
                 HEALTHCHECK_TLS_KEY=pki.client.key)
    assert done.returncode == 0 and done.stdout.strip().endswith("SERVING"), done.stderr
    done = healthcheck_run(mutual.port, **server_tls)
    assert done.returncode == 1 and "HEALTHCHECK_TLS_CERT and HEALTHCHECK_TLS_KEY" in done.stderr
    done = healthcheck_run(mutual.port, **server_tls, HEALTHCHECK_TLS_CERT=pki.untrusted_client.cert,
                 HEALTHCHECK_TLS_KEY=pki.untrusted_client.key)
    assert done.returncode == 1


def test_container_healthcheck_reports_an_unreadable_file(guarded: ServerThread, pki: Pki, tmp_path: Path) -> None:
    done = healthcheck_run(guarded.port, SENTIMENT_TLS_CERT=pki.server.cert,
                           HEALTHCHECK_TLS_CA=tmp_path / "missing.pem")
    assert done.returncode == 1 and "HEALTHCHECK_TLS_CA" in done.stderr and "cannot read it" in done.stderr
