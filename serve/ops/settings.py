"""The server's configuration: one frozen object, built once from flags and environment.

Every field is a command-line flag (``--max-batch-size``) and an environment variable with
the ``SENTIMENT_`` prefix (``SENTIMENT_MAX_BATCH_SIZE``); a flag wins over the variable,
the variable over the default. Nothing else in ``serve/`` reads the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.limits import MAX_CHARS_PER_TEXT
from serve.ops.errors import ConfigurationError

ENV_PREFIX = "SENTIMENT_"


def _opt(default: Any, help_text: str, choices: Sequence[str] | None = None, kind: type | None = None) -> Any:
    """A field with its help; ``kind`` is needed only where the default (None: off) cannot tell the type."""
    return field(default=default, metadata={"help": help_text, "choices": choices, "kind": kind})


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know; see ``python -m serve --help``."""

    model_repository: Path = _opt(Path("models"), "model repository root (Triton layout)")
    model: str = _opt("imdb-lstm", "model name inside the repository")
    version: str = _opt("latest", "model version number, or 'latest' for the highest")
    repository_poll_s: float = _opt(5.0, "with --version latest, seconds between looks for a newer version in the "
                                         "repository, which is then loaded and switched to (0: off; a pinned "
                                         "--version never reloads by itself)")
    host: str = _opt("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = _opt(8001, "gRPC port (0: any free port)")
    metrics_port: int = _opt(8002, "Prometheus metrics port, on --metrics-host (0: any free port, -1: off)")
    # The HTTP port (serve/rest/server.py): KServe v2 REST and the /v1 JSON API, same limits, tokens and TLS as gRPC.
    http_port: int = _opt(8000, "HTTP/REST port on --host: KServe v2 REST and /v1 JSON, with the gRPC port's "
                                "limits, --tls-* and --auth-token-file (0: any free port, -1: off)")
    http_read_timeout_s: float = _opt(30.0, "HTTP: seconds a client may take to send a request's headers, and "
                                            "again its body (slower ones get 408 or are dropped); an idle "
                                            "keep-alive connection is closed after as long")
    device: str = _opt("cpu", "execution device", ("cpu", "cuda"))
    allow_cpu_fallback: bool = _opt(False, "with --device cuda, run on CPU (with a warning) if CUDA is missing")
    precision: str = _opt("fp32", "which graph of the version to serve", ("fp32", "int8"))
    workers: int = _opt(0, "model runs in parallel, each on its own thread (0: usable CPUs / intra-op threads); "
                           "with --batching steps, the number of step loops")
    intra_op_threads: int = _opt(0, "ONNX Runtime threads inside one model run (0: usable CPUs / workers; "
                                    "both 0: one single-threaded run per usable CPU)")
    inter_op_threads: int = _opt(1, "ONNX Runtime threads across operators (the LSTM graph is sequential)")
    allow_spinning: bool = _opt(False, "let ONNX Runtime's idle threads spin (lower latency, burns shared CPU)")
    cpu_arena: bool = _opt(False, "ONNX Runtime CPU memory arena (off: memory stays flat with varied lengths)")
    max_batch_size: int = _opt(12, "most texts coalesced into one batch (tokenized together, then split by "
                                   "length); small batches keep requests queued for the next free worker under "
                                   "many concurrent single-text calls; a larger request is cut into length-sorted "
                                   "chunks of half --max-rows-per-run that the workers share")
    max_rows_per_run: int = _opt(8, "most texts in one ONNX Runtime call (the LSTM materialises its input "
                                    "projection for every time step: big runs fall out of cache)")
    max_queue_delay_ms: float = _opt(0.0, "under load, wait up to this long for a model run to fill "
                                          "(an idle server never waits)")
    batching: str = _opt("whole", "how texts share model runs: 'steps' (step-level batching: rows join and leave "
                                  "between steps of --step-tokens; needs a version exported with a step graph, "
                                  "else falls back to whole with one log line) or 'whole' (coalesced batches, "
                                  "each text read at once)", ("whole", "steps"))
    step_tokens: int = _opt(32, "with --batching steps, most tokens a step reads (bounds how long a new text "
                                "waits to join)")
    max_active_rows: int = _opt(32, "with --batching steps, most texts read together in one step")
    max_queue_size: int = _opt(2048, "most texts waiting for the model; beyond it requests get RESOURCE_EXHAUSTED")
    max_texts_per_request: int = _opt(1024, "most texts in one request (PredictBatch, stream message, ModelInfer)")
    max_chars_per_text: int = _opt(MAX_CHARS_PER_TEXT, "longest accepted text in characters (the model itself reads at "
                                            "most max_tokens tokens: head and tail are kept)")
    max_message_bytes: int = _opt(16 * 1024 * 1024, "largest gRPC message accepted or sent")
    max_explain_sentences: int = _opt(64, "most sentences the model reads of one Explain request's review (its "
                                          "cost grows with them; a long review's unread middle does not count); "
                                          "more is answered INVALID_ARGUMENT")
    explain_workers: int = _opt(1, "threads that run Explain requests, apart from the prediction workers")
    max_explain_queue: int = _opt(8, "most Explain requests waiting; beyond it they get RESOURCE_EXHAUSTED")
    stream_window: int = _opt(16, "requests of one PredictStream scored concurrently (flow control)")
    grace_period_s: float = _opt(10.0, "on SIGTERM, how long in-flight requests may take to finish")
    warmup: bool = _opt(True, "run the model over the length buckets before reporting SERVING")
    log_level: str = _opt("info", "log level", ("debug", "info", "warning", "error"))
    # Security (docs/security.md). None means off; the metrics page is unauthenticated plain HTTP.
    metrics_host: str | None = _opt(None, "metrics endpoint address (unset: --host, but 127.0.0.1 when TLS or "
                                          "token auth is on)", kind=str)
    tls_cert: Path | None = _opt(None, "PEM certificate chain for the gRPC port (turns TLS on; needs --tls-key)",
                                 kind=Path)
    tls_key: Path | None = _opt(None, "PEM private key of --tls-cert", kind=Path)
    tls_client_ca: Path | None = _opt(None, "PEM CA certificate(s): clients must present a certificate signed by "
                                            "one (mutual TLS; needs --tls-cert)", kind=Path)
    auth_token_file: Path | None = _opt(None, "file of accepted bearer tokens, one per line ('#' comments); "
                                              "health and reflection stay open", kind=Path)
    strict_token_file: bool = _opt(False, "refuse to start when --auth-token-file is readable by other users "
                                          "(otherwise: a warning)")
    # Resource limits at the edge (docs/security.md): what any one client, with or without a token, can hold.
    max_calls_in_flight: int = _opt(256, "most RPCs handled at once, counted from the moment a call arrives "
                                         "(before its message is read); beyond it calls get RESOURCE_EXHAUSTED")
    max_open_calls_in_flight: int = _opt(32, "of those, most calls to the services open without a token "
                                             "(health, reflection), so anonymous Watch streams cannot fill the server")
    max_streams_per_connection: int = _opt(100, "most concurrent HTTP/2 streams (RPCs) on one connection; "
                                                "further calls wait at the client")
    max_connections: int = _opt(256, "most client connections at once (further ones are closed on arrival); "
                                     "lowered to fit the open-file limit")
    connection_idle_s: float = _opt(60.0, "close a connection that has had no call for this long (clients "
                                          "reconnect on their next call; 0: never)")
    connection_max_age_s: float = _opt(3600.0, "ask clients to reconnect after this long (calls in flight get "
                                               "--connection-age-grace-s more; 0: never)")
    connection_age_grace_s: float = _opt(300.0, "how long calls may finish on a connection past its maximum age")
    handshake_timeout_s: float = _opt(10.0, "close a new connection that has not finished its TLS/HTTP/2 "
                                            "handshake within this time")
    metrics_max_connections: int = _opt(8, "most connections the metrics endpoint serves at once (further ones "
                                           "are closed); each one is a worker thread")
    metrics_timeout_s: float = _opt(5.0, "the metrics endpoint closes a connection idle for this long")

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= {low}" for name, low in (
            ("max_batch_size", 1), ("max_queue_size", 1), ("max_texts_per_request", 1), ("max_chars_per_text", 1),
            ("max_message_bytes", 1024), ("stream_window", 1), ("intra_op_threads", 0), ("inter_op_threads", 0),
            ("workers", 0), ("max_rows_per_run", 1), ("step_tokens", 1), ("max_active_rows", 1),
            ("max_explain_sentences", 1), ("explain_workers", 1), ("max_explain_queue", 1),
            ("port", 0), ("metrics_port", -1), ("max_queue_delay_ms", 0), ("grace_period_s", 0),
            ("repository_poll_s", 0), ("http_port", -1), ("http_read_timeout_s", 0.001),
            ("max_calls_in_flight", 1), ("max_open_calls_in_flight", 1),
            ("max_streams_per_connection", 1), ("max_connections", 1), ("connection_idle_s", 0),
            ("connection_max_age_s", 0), ("connection_age_grace_s", 0), ("handshake_timeout_s", 0.001),
            ("metrics_max_connections", 1), ("metrics_timeout_s", 0.001),
        ) if getattr(self, name) < low]
        if self.version != "latest" and not (self.version.isdigit() and int(self.version) > 0):
            problems.append(f"version must be a positive integer or 'latest', not {self.version!r}")
        if self.max_texts_per_request > self.max_queue_size:
            problems.append(f"max_texts_per_request ({self.max_texts_per_request}) exceeds max_queue_size "
                            f"({self.max_queue_size}): such requests could never be admitted")
        problems += self._security_problems()
        if problems:
            raise ConfigurationError("invalid settings: " + "; ".join(problems))

    def _security_problems(self) -> list[str]:
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together: give both the certificate chain and its "
                            "private key (PEM files)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca (mutual TLS) needs TLS itself: give --tls-cert and --tls-key too")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            path = getattr(self, name)
            reason = None if path is None else _unreadable(path)
            if reason:
                problems.append(f"--{name.replace('_', '-')} {path} ({env_name(name)}): {reason}")
        return problems

    @property
    def tls(self) -> bool:
        """Whether the gRPC port speaks TLS."""
        return self.tls_cert is not None

    @property
    def metrics_bind_host(self) -> str:
        """Where /metrics listens: ``metrics_host`` if set; else loopback once TLS or tokens guard the
        gRPC port (the metrics page has neither, so it must not quietly stay public), else ``host``."""
        if self.metrics_host is not None:
            return self.metrics_host
        return "127.0.0.1" if self.tls or self.auth_token_file is not None else self.host

    @property
    def exposed_without_protection(self) -> list[str]:
        """What listens beyond loopback unguarded: '--host without TLS', '--host without tokens',
        '--metrics-host' (the metrics page has neither); empty when nothing does."""
        exposed = []
        if not is_loopback(self.host):
            exposed += [f"--host {self.host} without {what}" for what, on in
                        (("TLS", self.tls), ("token auth", self.auth_token_file is not None)) if not on]
        if self.metrics_port >= 0 and not is_loopback(self.metrics_bind_host):
            exposed.append(f"--metrics-host {self.metrics_bind_host} (plain, unauthenticated HTTP)")
        return exposed

    @property
    def watch_repository(self) -> bool:
        """Whether the server follows new versions in the repository by itself (only when serving 'latest')."""
        return self.version == "latest" and self.repository_poll_s > 0

    @property
    def version_number(self) -> int | None:
        """The requested version, or None for the highest present."""
        return None if self.version == "latest" else int(self.version)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for the start-up log."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or 'localhost') is reachable only from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None when it can."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    return None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _kind(f: dataclasses.Field) -> type:
    """A field's value type: declared for optional fields, else read from the default."""
    return f.metadata["kind"] or (Path if isinstance(f.default, Path) else type(f.default))


def _converter(kind: type) -> Any:
    return {bool: _parse_bool, int: int, float: float, Path: Path}.get(kind, str)


def build_parser() -> argparse.ArgumentParser:
    """One flag per Settings field; the defaults come later, so that env vars can sit between."""
    parser = argparse.ArgumentParser(
        prog="python -m serve", description="IMDB sentiment gRPC server (sentiment.v1 + KServe v2).",
        epilog=f"Every flag can also be set by an environment variable: {ENV_PREFIX}<FLAG_NAME> "
               f"(e.g. {env_name('max_batch_size')}=32).")
    for f in dataclasses.fields(Settings):
        kind = _kind(f)
        flag = "--" + f.name.replace("_", "-")
        default = "unset" if f.default is None else f.default
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {default}]"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_converter(kind), choices=f.metadata["choices"],
                                default=None, help=help_text)
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` (flags) over ``environ`` (SENTIMENT_* variables) over defaults."""
    environ = os.environ if environ is None else environ
    parsed = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if parsed[f.name] is not None:
            values[f.name] = parsed[f.name]
        elif env_name(f.name) in environ:
            raw = environ[env_name(f.name)]
            if f.default is None and not raw.strip():
                continue  # an empty variable leaves an optional setting off
            try:
                values[f.name] = _converter(_kind(f))(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{env_name(f.name)}={raw!r}: {exc}") from exc
            if f.metadata["choices"] and values[f.name] not in f.metadata["choices"]:
                raise ConfigurationError(f"{env_name(f.name)}={raw!r}: choose from {f.metadata['choices']}")
    return Settings(**values)
