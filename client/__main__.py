"""``python -m client``: predict, health, and batch scoring of files.

    python -m client predict "A wonderful film" [--server 127.0.0.1:8001]
    python -m client explain "Great cast. Dreadful ending." [--json] [--server 127.0.0.1:8001]
    python -m client health [--server 127.0.0.1:8001]
    python -m client score reviews.csv --output scored.csv --local models/imdb-lstm
    python -m client score reviews.parquet --output scored.parquet --server 127.0.0.1:8001 --resume
    python -m client score reviews.parquet --output scored.parquet --ray --local models/imdb-lstm
    python -m client predict "Great" --server edge:8001 --tls-ca ca.pem --token-file token.txt
    python -m client status --token-file token.txt         # served version, last reload
    python -m client reload --version 2 --token-file token.txt

Exit status: 0 done, 1 error, 2 usage, 3 stopped at a bad row (--fail-on-bad-rows), 4 done but
some rows were bad (every other row is scored; they are listed in OUTPUT.bad_rows.jsonl),
130 interrupted (the output is resumable with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from client.columns import LABEL_NAMES, TEXT_NAMES
from client.formats import FORMATS
from client.writers import OUTPUT_FORMATS

DEFAULT_SERVER = "127.0.0.1:8001"
BAD_ROWS_EXIT = 4  # the run completed, but some rows could not be scored (a script must be able to tell)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


# How a file is read and what is added to it (client.columns, client.encoding).
_READING_FLAGS = (
    ("--text-column", f"column holding the review (default: the one column named {', '.join(TEXT_NAMES)}, any case)"),
    ("--label-column", "gold label column; accuracy/precision/recall/F1 are reported (default: the one column named "
                       f"{', '.join(LABEL_NAMES)}, any case; '' for none)"),
    ("--encoding", "text encoding of a CSV/TSV/JSON Lines/text input, e.g. cp1252, latin-1, utf-16 (default: UTF-8, "
                   "or what a byte-order mark says)"),
    ("--delimiter", "field delimiter of a CSV/TSV input: one character, or tab, comma, semicolon, pipe (default: "
                    "comma for .csv, tab for .tsv; another one found in the header is refused, naming it)"),
    ("--probability-column", "name of the added P(positive) column (default: probability, or predicted_probability "
                             "when the input has a probability column)"),
    ("--prediction-column", "name of the added predicted-label column (default: label, or predicted_label when the "
                            "input has a label column)"),
)
SECURITY_FLAGS = ("tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "token_file")


def _add_security_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """TLS and token flags (docs/security.md); ``suppress`` keeps a value given before the subcommand."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("TLS and token authentication (docs/security.md)")
    group.add_argument("--tls", action="store_true", default=default(False),
                       help="use TLS, verifying the server against the system's trusted roots")
    group.add_argument("--tls-ca", type=Path, metavar="PEM", default=default(None),
                       help="verify the server with this CA certificate (turns TLS on)")
    group.add_argument("--tls-cert", type=Path, metavar="PEM", default=default(None),
                       help="client certificate for mutual TLS (with --tls-key)")
    group.add_argument("--tls-key", type=Path, metavar="PEM", default=default(None),
                       help="private key of --tls-cert")
    group.add_argument("--tls-server-name", metavar="NAME", default=default(None),
                       help="name to expect in the server's certificate (default: the host of --server)")
    group.add_argument("--token-file", type=Path, metavar="FILE", default=default(None),
                       help="send the first token of this file as 'authorization: Bearer <token>'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="gRPC server host:port (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call in seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    _add_security_options(parser, suppress=False)
    # The same two options after the subcommand too (`score in.csv --server host:port`);
    # SUPPRESS keeps a value given before the subcommand when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="deadline of each call in seconds")
    secure = argparse.ArgumentParser(add_help=False)
    _add_security_options(secure, suppress=True)
    connect = argparse.ArgumentParser(add_help=False, parents=[common, secure])
    connect.add_argument("--server", default=argparse.SUPPRESS,
                         help=f"gRPC server host:port (default {DEFAULT_SERVER})")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", parents=[connect],
                                  help="score one or more reviews given on the command line")
    predict.add_argument("texts", nargs="+", help="review text(s); each is scored separately")
    predict.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    explain = commands.add_parser("explain", parents=[connect],
                                  help="show how the running sentiment moves through one review, sentence by "
                                       "sentence, and which sentences moved it (docs/explain.md)")
    explain.add_argument("text", nargs="?", help="the review (or give --file)")
    explain.add_argument("--file", type=Path, help="read the review from this UTF-8 file ('-': standard input)")
    explain.add_argument("--json", action="store_true",
                         help="print one JSON object: probability, sentences [{text, start, end, "
                              "running_probability, effect, ...}], turning_point, most_decisive")
    explain.add_argument("--per-token", action="store_true", help="also the running probability after each token")

    commands.add_parser("health", parents=[connect],
                        help="print the server's health status (exit 0 only when SERVING)")

    commands.add_parser("status", parents=[connect],
                        help="print the served model version and the last reload (admin: needs --token-file)")
    reload = commands.add_parser("reload", parents=[connect],
                                 help="load, verify and switch to a model version (admin: needs --token-file)")
    reload.add_argument("--version", type=int, default=0, help="version number (default: 0, the highest present)")

    score = commands.add_parser("score", parents=[common, secure],
                                help="score a file of reviews into a scored copy of it")
    score.add_argument("input", type=Path, help="CSV/TSV, JSON Lines, Parquet, text (one review per line), "
                                                "or an aclImdb folder / .tar.gz")
    score.add_argument("--output", type=Path, required=True,
                       help="output file; its extension picks the format (default: the input's)")
    backend = score.add_mutually_exclusive_group()
    backend.add_argument("--server", default=argparse.SUPPRESS,
                         help=f"score through the gRPC server at host:port (the default, at {DEFAULT_SERVER})")
    backend.add_argument("--local", metavar="MODEL_PATH",
                         help="score in this process with ONNX Runtime from models/<name>[/<version>]")
    score.add_argument("--ray", action="store_true",
                       help="score on a Ray Data actor pool (needs --local MODEL_PATH; same output as --local)")
    score.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    score.add_argument("--ray-actors", type=_positive, default=None, help="ONNX Runtime actors (default: CPUs/threads)")
    score.add_argument("--id-column", default="id", help="column identifying a row in the bad-rows file")
    score.add_argument("--input-format", choices=FORMATS, default=None,
                       help="override the format guessed from the input name")
    score.add_argument("--output-format", choices=OUTPUT_FORMATS, default=None,
                       help="override the format guessed from --output")
    for flag, text in _READING_FLAGS:  # all default to None: detected, or the format's own
        score.add_argument(flag, default=None, help=text)
    score.add_argument("--known-column", default=None,
                       help="name of the added column with the share of each review's words the model knew "
                            "(low: the model could not read it; not written to text output)")
    score.add_argument("--batch-size", type=_positive, default=64, help="texts per inference batch / request")
    score.add_argument("--chunk-rows", type=_positive, default=4096,
                       help="rows read, scored and committed together (the unit of --resume)")
    score.add_argument("--concurrency", type=_positive, default=4, help="server requests in flight")
    score.add_argument("--threads", type=_positive, default=None,
                       help="ONNX Runtime intra-op threads (local, or per Ray actor; default: usable CPUs)")
    score.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="local model graph")
    score.add_argument("--resume", action="store_true", help="continue an interrupted run into the same output")
    score.add_argument("--fail-on-bad-rows", action="store_true", help="stop at the first bad row (exit 3)")
    score.add_argument("--bad-rows", type=Path, default=None, help="bad-rows file (default OUTPUT.bad_rows.jsonl)")
    score.add_argument("--summary", type=Path, default=None, help="summary JSON (default OUTPUT.summary.json)")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.add_argument("--explain", action="store_true",
                       help="add the columns turning_point, turning_point_swing, most_decisive, most_decisive_effect "
                            "(one Explain call per row, --server only; docs/explain.md)")
    return parser


def _security(args: argparse.Namespace):  # noqa: ANN202 - client.api.Security (grpc imported late)
    from client.api import Security, read_token

    return Security(tls=args.tls, ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key,
                    server_name=args.tls_server_name,
                    token=read_token(args.token_file) if args.token_file is not None else None)


def cmd_predict(args: argparse.Namespace) -> int:
    from client.api import SentimentClient
    from client.encoding import check_arguments

    texts = check_arguments(args.texts, "review argument")
    with SentimentClient(args.server, security=_security(args), timeout_s=args.timeout) as client:
        predictions = client.predict_batch(texts) if len(texts) > 1 else [client.predict(texts[0])]
    for text, p in zip(texts, predictions, strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": p.label, "probability": p.probability,
                              "known_word_fraction": p.known_word_fraction, "model": p.model, "version": p.version},
                             ensure_ascii=False))
        else:
            print(f"{p.label}\t{p.probability:.4f}\t{text[:80]}")
    return 0


def cmd_explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from client.api import SentimentClient

    if (args.text is None) == (args.file is None):
        parser.error("explain takes the review either as TEXT or with --file, not both or neither")
    text = args.text if args.file is None else (
        sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8"))
    with SentimentClient(args.server, security=_security(args), timeout_s=args.timeout) as client:
        explanation = client.explain(text, per_token=args.per_token)
    if args.json:
        print(json.dumps(explanation, ensure_ascii=False))
        return 0
    from rich.console import Console

    from client.explain import render

    render(explanation, Console())
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from client.api import SentimentClient

    with SentimentClient(args.server, security=_security(args), timeout_s=args.timeout) as client:
        status = client.health()
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_admin(args: argparse.Namespace) -> int:
    """``status`` and ``reload``: the ModelAdmin service, answers printed as JSON."""
    from client.api import SentimentClient

    with SentimentClient(args.server, security=_security(args), timeout_s=args.timeout) as client:
        answer = client.model_status() if args.command == "status" else client.reload_model(args.version)
    print(json.dumps(answer, indent=2))
    return 0


def cmd_score(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from client.scoring import ScoreOptions, format_summary, score_file

    options = ScoreOptions(
        text_column=args.text_column, id_column=args.id_column or None, label_column=args.label_column,
        input_format=args.input_format, output_format=args.output_format, encoding=args.encoding,
        delimiter=args.delimiter,
        probability_column=args.probability_column, prediction_column=args.prediction_column,
        known_column=args.known_column, chunk_rows=args.chunk_rows, resume=args.resume,
        fail_on_bad_rows=args.fail_on_bad_rows, bad_rows_path=args.bad_rows, summary_path=args.summary,
        progress=not args.no_progress, explain=args.explain)
    if args.explain and (args.local or args.ray):
        parser.error("--explain is answered by the server's step graph: score with --server")
    if args.local and any(getattr(args, name) for name in SECURITY_FLAGS):
        parser.error("--tls* and --token-file apply to --server scoring, not --local/--ray")
    if args.ray:
        if not args.local:
            parser.error("--ray loads the model in each actor: pass --local MODEL_PATH with it")
        from client.ray_scoring import score_with_ray

        summary = score_with_ray(args.input, args.output, args.local, options, address=args.ray_address,
                                 actors=args.ray_actors, threads=args.threads or 1, batch_size=args.batch_size,
                                 precision=args.precision)
    else:
        backend = _backend(args)
        try:
            summary = score_file(args.input, args.output, backend, options)
        finally:
            backend.close()
    print(format_summary(summary))
    return BAD_ROWS_EXIT if summary["bad_rows"] else 0


def _backend(args: argparse.Namespace):  # noqa: ANN202 - LocalBackend | ServerBackend
    if args.local:
        from client.backends import LocalBackend

        return LocalBackend(args.local, threads=args.threads, batch_size=args.batch_size, precision=args.precision)
    from client.backends import ServerBackend

    return ServerBackend(args.server, batch_size=args.batch_size, concurrency=args.concurrency,
                         timeout_s=args.timeout, security=_security(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import grpc

    from client.scoring import BadRowsError, ScoringError

    try:
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "health":
            return cmd_health(args)
        if args.command == "explain":
            return cmd_explain(args, parser)
        if args.command in ("status", "reload"):
            return cmd_admin(args)
        return cmd_score(args, parser)
    except KeyboardInterrupt:
        if args.command == "score":
            print(f"\ninterrupted: committed rows are kept in {args.output}.partial/; run the same command "
                  "with --resume to continue", file=sys.stderr)
        return 130
    except grpc.RpcError as exc:
        # A TLS mismatch (plaintext vs TLS, untrusted certificate, mTLS without a client
        # certificate) surfaces as a bare UNAVAILABLE: say where to look.
        hint = " (is it up? does it use TLS: --tls-ca, --tls-cert/--tls-key, docs/security.md)" \
            if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"error: server {args.server}: {exc.code().name}: {exc.details()}{hint}", file=sys.stderr)
        return 1
    except ImportError as exc:  # a client-only install has no onnxruntime (--local) or ray (--ray)
        print(f"error: {exc}. --local needs the 'serve' extra (pip install -e '.[serve]'), --ray the 'ray' "
              "extra; --server needs neither", file=sys.stderr)
        return 1
    except BadRowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ScoringError, ValueError, OSError) as exc:  # FormatError, RepositoryError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # A shell starting us in the background (a non-interactive `cmd &`) leaves SIGINT
    # ignored; Ctrl-C / kill -INT must still stop a run cleanly, as a resumable exit 130.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
