"""`python -m train download` against a local HTTP server (the real one is out of reach here)."""

import hashlib
import http.server
import threading

import pytest

from train.__main__ import main
from train.download import DownloadError, download

PAYLOAD = bytes(range(256)) * 2000  # 512 kB stands in for the archive
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    honour_range = True
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        header = self.headers.get("Range")
        type(self).requests.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Handler.requests, Handler.honour_range = [], True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/aclImdb_v1.tar.gz"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_fresh_download_is_verified(server, tmp_path):
    target = download(server, tmp_path / "a.tar.gz", SHA)
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.tar.gz.part").exists()
    download(server, target, SHA)  # already there and valid: no new request
    assert Handler.requests == [None]


def test_resumes_a_partial_download(server, tmp_path):
    (tmp_path / "a.tar.gz.part").write_bytes(PAYLOAD[:100_000])
    assert download(server, tmp_path / "a.tar.gz", SHA).read_bytes() == PAYLOAD
    assert Handler.requests == ["bytes=100000-"]


def test_restarts_cleanly_when_server_ignores_range(server, tmp_path):
    Handler.honour_range = False
    (tmp_path / "a.tar.gz.part").write_bytes(b"garbage" * 10)
    assert download(server, tmp_path / "a.tar.gz", SHA).read_bytes() == PAYLOAD


def test_bad_checksum_is_refused_and_cleaned_up(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(server, tmp_path / "a.tar.gz", "0" * 64)
    assert not (tmp_path / "a.tar.gz").exists() and not (tmp_path / "a.tar.gz.part").exists()


def test_cli_reports_unreachable_host(tmp_path):
    with pytest.raises(SystemExit, match="cannot reach"):
        main(["download", "--url", "http://127.0.0.1:9/none.tar.gz", "--out", str(tmp_path / "x.tar.gz")])
