"""The HTTP port behind the gRPC port's TLS, mutual TLS and bearer tokens (docs/security.md).

Same throwaway PKI and token file as tests/serve/test_security.py, same server settings: one
``--tls-*`` and ``--auth-token-file`` guard both ports.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.certs import Pki
from tests.fixtures.http_client import TIMEOUT, Reply, infer_body, request
from tests.fixtures.server_thread import ServerThread
from tests.serve import test_security as security
from tests.serve.test_security import OTHER_TOKEN, TOKEN, WRONG_TOKEN

# The gRPC security tests' fixtures, the same servers' settings: one set of flags guards both ports.
pki, token_file, guarded, mutual = security.pki, security.token_file, security.guarded, security.mutual

GUARDED_ROUTES = [("GET", "/v2", None), ("GET", "/v2/models/imdb-lstm", None),
                  ("GET", "/v2/models/imdb-lstm/ready", None),
                  ("POST", "/v2/models/imdb-lstm/infer", infer_body(["great"])), ("GET", "/v2/models/stats", None),
                  ("POST", "/v2/repository/index", {}), ("POST", "/v1/predict", {"text": "great"}),
                  ("POST", "/v1/predict:batch", {"texts": ["great"]}), ("GET", "/no/such/path", None)]


def trusting(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def https(server: ServerThread, context: ssl.SSLContext, method: str, path: str, body=None,
          token: str | None = None, host: str = "127.0.0.1") -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(server.server.http_port, method, path, body, headers, context, host)


def test_https_serves_both_apis_with_a_token_and_health_without(guarded: ServerThread, pki: Pki) -> None:
    context = trusting(pki.ca)
    for path in ("/v2/health/live", "/v2/health/ready"):  # probes need no secret, as gRPC health
        assert https(guarded, context, "GET", path).status == 200
    reply = https(guarded, context, "POST", "/v1/predict", {"text": "a wonderful film"}, TOKEN)
    assert reply.status == 200 and reply.json()["model"]["name"] == "imdb-lstm"
    reply = https(guarded, context, "POST", "/v2/models/imdb-lstm/infer", infer_body(["great"]), OTHER_TOKEN)
    assert reply.status == 200 and reply.json()["outputs"][0]["shape"] == [1]
    assert https(guarded, context, "GET", "/v2/health/ready", host="localhost").status == 200


@pytest.mark.parametrize(("method", "path", "body"), GUARDED_ROUTES)
def test_every_other_route_needs_the_token(guarded: ServerThread, pki: Pki, method, path, body) -> None:
    context = trusting(pki.ca)
    for token, message in ((None, "missing credentials: send the header 'authorization: Bearer <token>'"),
                           (WRONG_TOKEN, "invalid token")):
        reply = https(guarded, context, method, path, body, token)
        assert reply.status == 401 and reply.headers["www-authenticate"] == "Bearer"
        assert reply.error == message
        assert TOKEN not in reply.error and WRONG_TOKEN not in reply.error


def test_malformed_or_repeated_authorization_headers_are_refused(guarded: ServerThread, pki: Pki) -> None:
    for values, message in (([f"Basic {TOKEN}"], "expected 'Bearer <token>'"), (["Bearer"], "expected 'Bearer"),
                            ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], "send exactly one 'authorization' header")):
        connection = http.client.HTTPSConnection("127.0.0.1", guarded.server.http_port, timeout=TIMEOUT,
                                                 context=trusting(pki.ca))
        try:
            connection.putrequest("GET", "/v2")
            for value in values:
                connection.putheader("Authorization", value)
            connection.endheaders()
            response = connection.getresponse()
            reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()
        assert reply.status == 401 and message in reply.error and TOKEN not in reply.error


def test_refusals_are_counted_and_tokens_stay_out_of_metrics(guarded: ServerThread, pki: Pki) -> None:
    https(guarded, trusting(pki.ca), "POST", "/v1/predict", {"text": "great"}, WRONG_TOKEN)
    page = urllib.request.urlopen(f"http://127.0.0.1:{guarded.server.metrics_port}/metrics",
                                  timeout=TIMEOUT).read().decode()
    assert re.search(r'sentiment_requests_total\{code="401",method="POST /v1/predict"\} [1-9]', page), page
    # The same failure counter as the gRPC port's, by kind (invalid: a token that is not one of ours).
    assert re.search(r'sentiment_auth_failures_total\{kind="invalid"\} [1-9]', page), page
    for secret in (TOKEN, OTHER_TOKEN, WRONG_TOKEN):
        assert secret not in page


def test_plaintext_and_untrusting_clients_cannot_talk_to_the_tls_port(guarded: ServerThread, pki: Pki) -> None:
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        request(guarded.server.http_port, "GET", "/v2/health/live")
    with pytest.raises(ssl.SSLCertVerificationError):  # the server's certificate is not from this CA
        https(guarded, trusting(pki.untrusted_ca), "GET", "/v2/health/live")
    with socket.create_connection(("127.0.0.1", guarded.server.http_port), timeout=TIMEOUT) as sock, \
            pytest.raises(ssl.SSLCertVerificationError):  # nor is it for this name
        trusting(pki.ca).wrap_socket(sock, server_hostname="elsewhere.example")
    assert https(guarded, trusting(pki.ca), "GET", "/v2/health/live").status == 200


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(mutual: ServerThread, pki: Pki) -> None:
    for client in (None, (pki.untrusted_client.cert, pki.untrusted_client.key)):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            https(mutual, trusting(pki.ca, client), "GET", "/v2/health/live")
    context = trusting(pki.ca, (pki.client.cert, pki.client.key))
    assert https(mutual, context, "GET", "/v2/health/ready").status == 200
    assert https(mutual, context, "POST", "/v1/predict", {"text": "great fun"}).status == 200
