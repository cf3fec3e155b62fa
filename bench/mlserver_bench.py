"""Head to head with Seldon MLServer and NVIDIA Triton (not a test): same model, texts, load and protocol.

    python bench/mlserver_bench.py --mlserver-python /tmp/mlserver/bin/python [--seconds 6] [--rounds 2]
        [--triton-python /tmp/pytriton/bin/python] [--servers ours ours-steps mlserver triton]

MLServer is not a dependency of this project; install it in an environment of its own:

    python3.11 -m venv /tmp/mlserver
    /tmp/mlserver/bin/pip install mlserver==1.7.1 uvloop==0.21.0 onnxruntime==1.32.0 tokenizers==0.23.3 numpy==2.4.6

(uvloop 0.22 and later make MLServer 1.7.1's inference worker processes exit at start:
"There is no current event loop in thread 'MainThread'".) Triton comes through PyTriton,
which brings a tritonserver binary (2.45 with nvidia-pytriton 0.5.7) and its Python backend stub:

    python3.11 -m venv /tmp/pytriton
    /tmp/pytriton/bin/pip install nvidia-pytriton==0.5.7 onnxruntime==1.32.0 tokenizers==0.23.3 'numpy<2'

(numpy 2 breaks the stub's BYTES tensors: "unpack_from requires a buffer of at least ...
bytes"; the stub links the system's libpython3.11, so it is started with LD_LIBRARY_PATH set to
the environment's own libpython, else "'_thread.RLock' object has no attribute
'_recursion_count'". bench/triton_server.py binds the same tokenization and ONNX Runtime as a
Triton model: ``--triton-instances`` instances of ``--triton-threads`` threads, dynamic batcher
``--triton-max-batch-size`` / ``--triton-max-queue-delay-us``.)

Both servers serve the shipped model over KServe v2 gRPC: ours (``python -m serve``, its
defaults) and MLServer with ``bench/mlserver_runtime.py`` (the same tokenization and
truncation, so both answer the same probabilities: checked before measuring) and its adaptive
batching (``--mlserver-max-batch-size``, ``--mlserver-max-batch-time-ms``), its inference
in ``--mlserver-workers`` worker processes of ``--mlserver-threads`` ONNX Runtime threads
each. The same closed-loop grpc.aio load generator sends ``ModelInfer`` with one review per
request (typed ``bytes_contents``, which both accept) at each ``--concurrency``. Servers run
one at a time, ``--rounds`` times in alternating order; each row reports texts/s, p50/p99 and
the CPU of the server's whole process tree. The in-process ONNX Runtime ceiling is measured
in the same run (bench/serve_bench.py's), so both can be read as a share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import free_port, machine, write_results  # noqa: E402
from bench.serve_bench import add_server_options, load_row, load_texts, measure_calls, ort_in_process, start_server  # noqa: E402
from protos.inference import grpc_predict_v2_pb2 as pb  # noqa: E402
from protos.inference import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

MODEL = "imdb-lstm"
SERVERS = ("ours", "ours-steps", "mlserver", "triton")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def infer_request(texts: list[str], batched_model: bool = False) -> pb.ModelInferRequest:
    """A ModelInfer of ``texts`` as typed BYTES ``[n]``, or ``[n, 1]`` for a Triton model with a batch dimension."""
    request = pb.ModelInferRequest(model_name=MODEL)
    shape = [len(texts), 1] if batched_model else [len(texts)]
    request.inputs.add(name="text", datatype="BYTES", shape=shape).contents.bytes_contents.extend(
        t.encode("utf-8") for t in texts)
    return request


def probabilities(reply: pb.ModelInferResponse) -> np.ndarray:
    """``probability`` from a reply, typed or raw (MLServer and ours answer typed requests typed)."""
    index = [o.name for o in reply.outputs].index("probability")
    if reply.raw_output_contents:
        return np.frombuffer(reply.raw_output_contents[index], dtype="<f4")
    return np.array(reply.outputs[index].contents.fp32_contents, dtype=np.float32)


def wait_ready(port: int, proc: subprocess.Popen, timeout_s: float) -> float:
    """Seconds until ``ModelReady`` says yes on ``port``; raises if the process dies or time runs out."""
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=1).ready:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"model not ready after {timeout_s} s")


def start_mlserver(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, int]:
    """MLServer on free loopback ports, serving the shipped model through bench/mlserver_runtime.py."""
    grpc_port = free_port()
    settings = {"debug": False, "host": "127.0.0.1", "grpc_port": grpc_port, "http_port": free_port(),
                "metrics_port": free_port(), "parallel_workers": args.mlserver_workers,
                "grpc_max_message_length": 16 * 1024 * 1024}
    version = max(int(p.name) for p in (args.model_repository / MODEL).iterdir() if p.name.isdigit())
    model = {"name": MODEL, "implementation": "mlserver_runtime.SentimentRuntime",
             "max_batch_size": args.mlserver_max_batch_size, "max_batch_time": args.mlserver_max_batch_time_ms / 1000,
             "parameters": {"uri": str((args.model_repository / MODEL / str(version)).resolve()),
                            "extra": {"intra_op_threads": args.mlserver_threads}}}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bench"), SENTIMENT_REPO_ROOT=str(ROOT),
               TOKENIZERS_PARALLELISM="false", OMP_WAIT_POLICY="PASSIVE")
    command = [str(Path(args.mlserver_python).parent / "mlserver"), "start", str(folder)]  # its console script
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, grpc_port


def start_triton(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    """Triton (through PyTriton, bench/triton_server.py) on free loopback ports."""
    grpc_port = free_port()
    libdir = subprocess.run([args.triton_python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    env = dict(os.environ, LD_LIBRARY_PATH=libdir, TOKENIZERS_PARALLELISM="false", OMP_WAIT_POLICY="PASSIVE")
    command = [args.triton_python, str(ROOT / "bench" / "triton_server.py"), "--model-repository",
               str(args.model_repository), "--grpc-port", str(grpc_port), "--http-port", str(free_port()),
               "--metrics-port", str(free_port()), "--instances", str(args.triton_instances),
               "--threads", str(args.triton_threads), "--max-batch-size", str(args.triton_max_batch_size),
               "--max-queue-delay-us", str(args.triton_max_queue_delay_us)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, grpc_port


async def drive(port: int, texts: list[str], concurrency: int, seconds: float, warmup_s: float,
                batched_model: bool = False) -> dict[str, Any]:
    """``concurrency`` closed-loop callers, one review per ModelInfer, for ``seconds`` after ``warmup_s``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def send(worker: int, call: int) -> None:
            text = texts[(worker * 997 + call * concurrency) % len(texts)]
            await stub.ModelInfer(infer_request([text], batched_model), timeout=30)

        measured = await measure_calls(send, concurrency, seconds, warmup_s)
    return {"concurrency": concurrency, **load_row(*measured, texts_per_request=1)}


def measure_server(name: str, args: argparse.Namespace, texts: list[str], sample: list[str]) -> dict[str, Any]:
    """Start server ``name`` (see SERVERS), check its answers, drive every concurrency, stop it."""
    batched_model = name == "triton"
    with tempfile.TemporaryDirectory(prefix="mlserver-bench-") as folder:
        started = time.monotonic()
        if name == "ours":
            proc, port, _, _ = start_server(args)
        elif name == "ours-steps":
            steps = argparse.Namespace(**{**vars(args), "server_args": ["--batching", "steps", *args.server_args]})
            proc, port, _, _ = start_server(steps)
        elif name == "triton":
            proc, port = start_triton(args)
        else:
            proc, port = start_mlserver(args, Path(folder))
        try:
            wait_ready(port, proc, timeout_s=120)
            ready_s = time.monotonic() - started
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                reply = stub.ModelInfer(infer_request(sample, batched_model), timeout=60)
            rows = []
            for concurrency in args.concurrency:
                cpu, began = tree_cpu_seconds(proc.pid), time.monotonic()
                row = asyncio.run(drive(port, texts, concurrency, args.seconds, args.warmup_s, batched_model))
                row["server_cpus"] = (tree_cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
                rows.append(row)
                print(f"{name} c={concurrency}: {row['texts_per_s']:.0f} texts/s, p50 {row['p50_ms']:.2f} ms",
                      file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    return {"ready_s": ready_s, "probabilities": probabilities(reply).tolist(), "rows": rows}


def markdown(results: dict[str, Any]) -> str:
    """One table: texts/s (p99 ms) per server and concurrency, and ours over each peer."""
    ceiling, servers = results["ceiling_texts_per_s"], list(results["median"])
    peers = [n for n in servers if n not in ("ours", "ours-steps")]
    lines = [f"Machine: {results['machine']}; {results['texts']} IMDB test reviews, one per `ModelInfer`; "
             f"{results['seconds']} s per row; {results['rounds']} round(s), median shown; in-process ceiling "
             f"{ceiling:.0f} texts/s; {'; '.join(f'{k}: {v}' for k, v in results['configurations'].items())}; "
             f"`{results['command']}`", "",
             "| concurrency | " + " | ".join(f"{n} texts/s (p99 ms)" for n in servers) + " | "
             + " | ".join(f"{o} / {peer}" for o in servers if o.startswith("ours") for peer in peers) + " |",
             "|---:|" + "---:|" * (len(servers) + sum(o.startswith("ours") for o in servers) * len(peers))]
    for i, concurrency in enumerate(results["concurrency"]):
        row = {n: results["median"][n][i] for n in servers}
        cells = [f"{row[n]['texts_per_s']:.0f} ({row[n]['p99_ms']:.1f})" for n in servers]
        ratios = [f"{row[o]['texts_per_s'] / row[peer]['texts_per_s']:.2f}x" for o in servers if o.startswith("ours")
                  for peer in peers]
        lines.append(f"| {concurrency} | " + " | ".join(cells + ratios) + " |")
    lines.append(f"\nSame answers: largest probability difference from ours on {results['sample']} reviews: "
                 + ", ".join(f"{n} {d:.1e}" for n, d in results["max_abs_diff"].items())
                 + ". Model ready after start: " + ", ".join(f"{n} {t:.2f} s" for n, t in results["ready_s"].items())
                 + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(parser)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=["ours", "mlserver"],
                        help="servers to measure, one at a time (the first is the reference for answers)")
    parser.add_argument("--mlserver-python", help="a Python with mlserver, onnxruntime, tokenizers")
    parser.add_argument("--triton-python", help="a Python with nvidia-pytriton, onnxruntime, tokenizers, numpy<2")
    parser.add_argument("--triton-instances", type=int, default=len(os.sched_getaffinity(0)),
                        help="Triton model instances (each runs batches on its own)")
    parser.add_argument("--triton-threads", type=int, default=1, help="ONNX Runtime threads per Triton instance")
    parser.add_argument("--triton-max-batch-size", type=int, default=32)
    parser.add_argument("--triton-max-queue-delay-us", type=int, default=5000)
    parser.add_argument("--mlserver-workers", type=int, default=1, help="MLServer parallel_workers")
    parser.add_argument("--mlserver-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="ONNX Runtime intra-op threads per MLServer worker")
    parser.add_argument("--mlserver-max-batch-size", type=int, default=32)
    parser.add_argument("--mlserver-max-batch-time-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--results-name", default="mlserver", help="results go to OUT/NAME.{json,md}")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts = load_texts(args.data, args.texts, seed=0)
    sample = texts[:16]
    if "triton" in args.servers and not args.triton_python:
        parser.error("--servers triton needs --triton-python")
    if "mlserver" in args.servers and not args.mlserver_python:
        parser.error("--servers mlserver needs --mlserver-python")
    configurations = {"ours": "defaults (--batching whole)", "ours-steps": "defaults with --batching steps"}
    if "mlserver" in args.servers:
        version = subprocess.run([args.mlserver_python, "-c", "import mlserver; print(mlserver.__version__)"],
                                 capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        batching = (f"adaptive batching {args.mlserver_max_batch_size} / {args.mlserver_max_batch_time_ms} ms"
                    if args.mlserver_max_batch_size > 1 else "adaptive batching off")
        configurations["mlserver"] = (f"MLServer {version}, {args.mlserver_workers} worker(s) x "
                                      f"{args.mlserver_threads} thread(s), {batching}")
    if "triton" in args.servers:
        configurations["triton"] = (f"Triton via PyTriton, {args.triton_instances} instance(s) x "
                                    f"{args.triton_threads} thread(s), dynamic batcher {args.triton_max_batch_size} / "
                                    f"{args.triton_max_queue_delay_us} us")
    configurations = {n: c for n, c in configurations.items() if n in args.servers}
    ceiling = ort_in_process(argparse.Namespace(**{**vars(args), "seconds": 2.0}), texts)["ceiling_texts_per_s"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.servers}
    for round_index in range(args.rounds):
        for name in (args.servers if round_index % 2 == 0 else args.servers[::-1]):
            runs[name].append(measure_server(name, args, texts, sample))
    answers = {name: np.array(done[0]["probabilities"]) for name, done in runs.items()}
    median = {name: [{key: statistics.median(run["rows"][i][key] for run in done) for key in done[0]["rows"][i]}
                     for i in range(len(args.concurrency))] for name, done in runs.items()}
    reference = answers[args.servers[0]]
    results = {"machine": machine(), "texts": len(texts), "seconds": args.seconds, "rounds": args.rounds,
               "configurations": configurations, "concurrency": args.concurrency,
               "command": "python " + " ".join(["bench/mlserver_bench.py", *sys.argv[1:]]),
               "ceiling_texts_per_s": ceiling, "sample": len(sample),
               "max_abs_diff": {name: float(np.abs(a - reference).max()) for name, a in answers.items()},
               "ready_s": {name: statistics.median(run["ready_s"] for run in done) for name, done in runs.items()},
               "runs": runs, "median": median}
    write_results(args.out, args.results_name, results, markdown(results))


if __name__ == "__main__":
    main()
