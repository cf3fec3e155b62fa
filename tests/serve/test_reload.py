"""Hot model reload: the repository watcher, the switch under load, broken versions, the admin RPC."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import admin_pb2 as apb
from protos.sentiment.v1 import admin_pb2_grpc as apb_grpc
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from runtime.preprocessing import encode_texts, pad_batch
from runtime.repository import CONFIG_FILE, METADATA_FILE, PRECISION_FILES, TOKENIZER_FILE, load_version, open_session
from serve.lifecycle.reload import TRIGGER_ADMIN
from tests.fixtures.tiny_repository import NAME, build_tiny_repository, write_metadata
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

TIMEOUT = 10.0
TOKEN = "reload-test-token"
VERSIONS = (1, 2, 3)
LOAD_THREADS, LOAD_SECONDS = 8, 3.0
Scorer = Callable[[str], float]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1-3 of the tiny model, each with its own weights (so each scores differently)."""
    root = tmp_path_factory.mktemp("reload_templates")
    for version in VERSIONS:
        build_tiny_repository(root, version=version, seed=version)
    return root


@pytest.fixture(scope="module")
def references(templates: Path) -> dict[int, Scorer]:
    """Per version, P(positive) of a text scored alone in-process: what that version must answer."""

    def scorer(version: int) -> Scorer:
        model = load_version(templates, NAME, version)
        tokenizer = model.load_tokenizer()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = open_session(model, "fp32", options)
        cache: dict[str, float] = {}

        def score(text: str) -> float:
            if text not in cache:
                (ids,) = encode_texts(tokenizer, [text], model.max_tokens, model.head_tokens, model.unk_id)
                input_ids, lengths = pad_batch([ids], model.pad_id)
                cache[text] = float(session.run(None, {"input_ids": input_ids, "lengths": lengths})[0][0])
            return cache[text]

        return score

    scorers = {version: scorer(version) for version in VERSIONS}
    assert len({scorers[v](REVIEWS[0]) for v in VERSIONS}) == len(VERSIONS)  # versions are distinguishable
    return scorers


def publish(templates: Path, root: Path, version: int, damage: Callable[[Path], None] | None = None) -> Path:
    """Publish a template version as export does: write a hidden staging folder, then rename it into place."""
    staging = root / NAME / f".staging-{version}-{os.getpid()}"
    shutil.copytree(templates / NAME / str(version), staging)
    if damage is not None:
        damage(staging)
    final = root / NAME / str(version)
    os.rename(staging, final)
    return final


@pytest.fixture
def repo(templates: Path, tmp_path: Path) -> Path:
    """A repository holding version 1 only."""
    (tmp_path / NAME).mkdir()
    shutil.copy(templates / NAME / CONFIG_FILE, tmp_path / NAME)
    publish(templates, tmp_path, 1)
    return tmp_path


@pytest.fixture
def running(request: pytest.FixtureRequest, repo: Path) -> Iterator[ServerThread]:
    """A server on ``repo``; ``@pytest.mark.parametrize('running', [{...settings}], indirect=True)`` overrides."""
    server = ServerThread(make_settings(repo, **getattr(request, "param", {})))
    yield server
    server.close()


def predict(server: ServerThread, text: str = REVIEWS[0], metadata=None) -> pb.PredictResponse:
    return pb_grpc.SentimentServiceStub(server.channel).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT,
                                                                metadata=metadata)


def model_infer(server: ServerThread, text: str) -> tuple[int, float]:
    request = kpb.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text.encode())
    reply = kpb_grpc.GRPCInferenceServiceStub(server.channel).ModelInfer(request, timeout=TIMEOUT)
    (probability,) = reply.outputs[0].contents.fp32_contents
    assert reply.outputs[0].name == "probability"
    return int(reply.model_version), probability


def wait_until(condition: Callable[[], bool], what: str) -> None:
    until = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.02)


def reload(server: ServerThread, version: int | None):
    return server.call(server.server.reloader.reload(version, TRIGGER_ADMIN))


def scrape(server: ServerThread) -> str:
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()


@pytest.mark.parametrize("running", [{"repository_poll_s": 0.05}], indirect=True)
def test_watcher_switches_to_a_published_version(running: ServerThread, templates: Path, repo: Path,
                                                 references: dict[int, Scorer]) -> None:
    assert predict(running).model.version == 1
    publish(templates, repo, 2)
    wait_until(lambda: predict(running).model.version == 2, "the watcher to switch to version 2")
    reply = predict(running, REVIEWS[2])
    assert reply.prediction.probability == pytest.approx(references[2](REVIEWS[2]), abs=1e-6)
    kserve = kpb_grpc.GRPCInferenceServiceStub(running.channel)
    assert list(kserve.ModelMetadata(kpb.ModelMetadataRequest(name=NAME), timeout=TIMEOUT).versions) == ["2"]
    assert kserve.ModelReady(kpb.ModelReadyRequest(name=NAME, version="2"), timeout=TIMEOUT).ready
    assert model_infer(running, REVIEWS[3]) == (2, pytest.approx(references[2](REVIEWS[3]), abs=1e-6))
    metrics = scrape(running)
    assert "sentiment_model_version 2.0" in metrics
    assert 'sentiment_model_reloads_total{outcome="switched",trigger="watch"} 1.0' in metrics
    assert 'sentiment_model_info{device="cpu",model="imdb-lstm",precision="fp32",version="2"} 1.0' in metrics
    assert 'version="1"' not in metrics  # the replaced version is no longer reported


@pytest.mark.parametrize("running", [{"repository_poll_s": 0.0}], indirect=True)
def test_switching_under_concurrent_load_fails_no_request(running: ServerThread, templates: Path, repo: Path,
                                                          references: dict[int, Scorer]) -> None:
    for version in VERSIONS[1:]:
        publish(templates, repo, version)
    answers: list[tuple[int, str, float]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client(index: int) -> None:
        calls = 0
        while not stop.is_set() and calls < 2000:  # bounded even if the clock misbehaves
            text = REVIEWS[(index + calls) % len(REVIEWS)]
            try:
                if calls % 2:
                    version, probability = model_infer(running, text)
                else:
                    reply = predict(running, text)
                    version, probability = reply.model.version, reply.prediction.probability
                answers.append((version, text, probability))
            except BaseException as exc:  # every failure counts, whatever its kind
                failures.append(exc)
            calls += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    switches, deadline = [], time.monotonic() + LOAD_SECONDS
    try:
        while time.monotonic() < deadline and len(switches) < 50:
            target = VERSIONS[(len(switches) + 1) % len(VERSIONS)]  # 2, 3, 1, 2, ...
            mark = len(answers)
            switches.append(reload(running, target).outcome)
            wait_until(lambda t=target, m=mark: any(v == t for v, _, _ in answers[m:]), f"an answer from {target}")
            time.sleep(0.05)  # let requests pile up on this version before the next switch
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not failures, f"{len(failures)} failed requests, first: {failures[0]!r}"
    assert len(switches) >= 3 and set(switches) == {"switched"}
    wrong = [(v, t[:20], p) for v, t, p in answers if abs(p - references[v](t)) > 1e-6]
    assert not wrong, f"{len(wrong)} of {len(answers)} answers differ from their version's own scoring: {wrong[:3]}"
    final = running.server.core.model.version
    assert predict(running).model.version == final


@pytest.mark.parametrize("running", [{"repository_poll_s": 0.0, "workers": 1}], indirect=True)
def test_a_request_admitted_before_a_switch_is_scored_by_the_old_version(running: ServerThread, templates: Path,
                                                                         repo: Path,
                                                                         references: dict[int, Scorer]) -> None:
    core = running.server.core
    entered, release = threading.Event(), threading.Event()
    real = core.loaded.runner

    class Gated:  # holds version 1's model runs until the switch has happened
        model, device = real.model, real.device

        def run(self, input_ids, lengths):
            entered.set()
            assert release.wait(TIMEOUT)
            return real.run(input_ids, lengths)

    core.switch(dataclasses.replace(core.loaded, runner=Gated()))
    publish(templates, repo, 2)
    api = pb_grpc.SentimentServiceStub(running.channel)
    running_call = api.Predict.future(pb.PredictRequest(text=REVIEWS[0]), timeout=TIMEOUT)
    assert entered.wait(TIMEOUT)
    queued_call = api.Predict.future(pb.PredictRequest(text=REVIEWS[1]), timeout=TIMEOUT)
    wait_until(lambda: core._batcher.queued_units == 1, "the second request to queue")  # noqa: SLF001 - observing
    old = weakref.ref(core.loaded)
    assert reload(running, 2).outcome == "switched"
    release.set()
    for call, text in ((running_call, REVIEWS[0]), (queued_call, REVIEWS[1])):
        reply = call.result()
        assert reply.model.version == 1
        assert reply.prediction.probability == pytest.approx(references[1](text), abs=1e-6)
    assert predict(running, REVIEWS[1]).model.version == 2
    gc.collect()
    assert old() is None  # the old session is released once no request holds it


def break_checksum(version_dir: Path) -> None:
    with (version_dir / PRECISION_FILES["fp32"]).open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xfe\xfd\xfc")


def remove_tokenizer(version_dir: Path) -> None:
    (version_dir / TOKENIZER_FILE).unlink()


def unloadable_graph(version_dir: Path) -> None:
    """Garbage ONNX whose checksum is right: only opening the session can tell."""
    (version_dir / PRECISION_FILES["fp32"]).write_bytes(b"not an onnx graph" * 64)
    rewrite_metadata(version_dir)


def nan_weights(version_dir: Path) -> None:
    """A valid graph that answers NaN: only the probe scored before switching can tell."""
    path = version_dir / PRECISION_FILES["fp32"]
    graph = onnx.load(str(path))
    for index, tensor in enumerate(graph.graph.initializer):
        if tensor.name == "head_b":
            graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.array([np.nan], np.float32), "head_b"))
    onnx.save(graph, str(path))
    rewrite_metadata(version_dir)


def rewrite_metadata(version_dir: Path) -> None:
    old = json.loads((version_dir / METADATA_FILE).read_text())
    extra = {key: old[key] for key in ("max_tokens", "head_tokens", "pad_id", "unk_id")}
    write_metadata(version_dir, NAME, int(old["version"]), extra)


@pytest.mark.parametrize("damage, reason", [
    (break_checksum, "sha256"), (remove_tokenizer, "tokenizer.json is missing"),
    (unloadable_graph, "ONNX Runtime cannot load it"), (nan_weights, "probability must lie in [0, 1]"),
])
@pytest.mark.parametrize("running", [{"repository_poll_s": 3600.0}], indirect=True)  # polled by hand below
def test_a_broken_version_is_rejected_once_and_the_old_one_keeps_serving(
        running: ServerThread, templates: Path, repo: Path, references: dict[int, Scorer],
        caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None], reason: str) -> None:
    watcher = running.server.watcher
    assert watcher is not None
    caplog.set_level(logging.WARNING, logger="serve.reload")
    broken = publish(templates, repo, 2, damage)
    attempt = running.call(watcher.poll())
    assert (attempt.version, attempt.outcome, attempt.served_version) == (2, "rejected", 1)
    assert reason in attempt.message
    rejections = [r for r in caplog.records if r.getMessage().startswith("model version rejected")]
    assert len(rejections) == 1 and reason in rejections[0].reason and rejections[0].version == 2
    for _ in range(3):  # not retried while its files stay as they are
        assert running.call(watcher.poll()) is None
    assert len([r for r in caplog.records if r.getMessage().startswith("model version rejected")]) == 1
    reply = predict(running, REVIEWS[2])
    assert reply.model.version == 1
    assert reply.prediction.probability == pytest.approx(references[1](REVIEWS[2]), abs=1e-6)
    assert 'sentiment_model_reloads_total{outcome="rejected",trigger="watch"} 1.0' in scrape(running)

    publish(templates, repo, 3)  # a good newer version is still picked up
    assert running.call(watcher.poll()).outcome == "switched"
    assert predict(running).model.version == 3
    assert broken.is_dir()


@pytest.mark.parametrize("running", [{"repository_poll_s": 3600.0}], indirect=True)
def test_a_rejected_version_is_retried_once_its_files_change(running: ServerThread, templates: Path,
                                                             repo: Path) -> None:
    watcher = running.server.watcher
    broken = publish(templates, repo, 2, remove_tokenizer)
    assert running.call(watcher.poll()).outcome == "rejected"
    shutil.copy(templates / NAME / "2" / TOKENIZER_FILE, broken / TOKENIZER_FILE)  # repaired in place
    assert running.call(watcher.poll()).outcome == "switched"
    assert predict(running).model.version == 2


@pytest.mark.parametrize("running", [{"version": "1", "repository_poll_s": 0.05}, {"repository_poll_s": 0.0}],
                         indirect=True)
def test_a_pinned_version_or_a_zero_poll_interval_never_reloads_by_itself(running: ServerThread, templates: Path,
                                                                         repo: Path) -> None:
    assert running.server.watcher is None and not running.settings.watch_repository
    publish(templates, repo, 2)
    assert predict(running).model.version == 1


# -- the admin RPC -------------------------------------------------------------------------

@pytest.fixture
def admin_server(repo: Path, tmp_path: Path) -> Iterator[ServerThread]:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# test tokens\n{TOKEN}\n", encoding="utf-8")
    server = ServerThread(make_settings(repo, repository_poll_s=0.0, auth_token_file=tokens))
    yield server
    server.close()


def admin(server: ServerThread) -> apb_grpc.ModelAdminStub:
    return apb_grpc.ModelAdminStub(server.channel)


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_admin_reload_switches_reports_and_refuses_unknown_or_broken_versions(
        admin_server: ServerThread, templates: Path, repo: Path) -> None:
    publish(templates, repo, 2)
    reply = admin(admin_server).ReloadModel(apb.ReloadModelRequest(version=2), timeout=TIMEOUT, metadata=AUTH)
    assert (reply.model, reply.previous_version, reply.version, reply.outcome) == (NAME, 1, 2, "switched")
    assert predict(admin_server, metadata=AUTH).model.version == 2
    again = admin(admin_server).ReloadModel(apb.ReloadModelRequest(version=0), timeout=TIMEOUT, metadata=AUTH)
    assert (again.version, again.outcome) == (2, "unchanged")  # 0 = latest, already serving

    with pytest.raises(grpc.RpcError) as info:
        admin(admin_server).ReloadModel(apb.ReloadModelRequest(version=9), timeout=TIMEOUT, metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no version 9" in info.value.details()

    publish(templates, repo, 3, break_checksum)
    with pytest.raises(grpc.RpcError) as info:
        admin(admin_server).ReloadModel(apb.ReloadModelRequest(version=3), timeout=TIMEOUT, metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 3 was rejected and version 2 keeps serving" in info.value.details()
    assert "sha256" in info.value.details()

    status = admin(admin_server).GetModelStatus(apb.GetModelStatusRequest(), timeout=TIMEOUT, metadata=AUTH)
    assert (status.model, status.version, status.precision, status.device) == (NAME, 2, "fp32", "cpu")
    assert (status.last_reload.trigger, status.last_reload.version, status.last_reload.outcome) == \
        ("admin", 3, "rejected")
    assert status.repository_poll_s == 0.0

    back = admin(admin_server).ReloadModel(apb.ReloadModelRequest(version=1), timeout=TIMEOUT, metadata=AUTH)
    assert (back.previous_version, back.version, back.outcome) == (2, 1, "switched")  # an explicit rollback


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong-token"),)])
def test_admin_rpcs_need_the_token(admin_server: ServerThread, metadata) -> None:
    for call, request in ((admin(admin_server).ReloadModel, apb.ReloadModelRequest(version=0)),
                          (admin(admin_server).GetModelStatus, apb.GetModelStatusRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=TIMEOUT, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert admin_server.server.reloader.last is None  # nothing was attempted


@pytest.mark.parametrize("running", [{"repository_poll_s": 0.0}], indirect=True)
def test_admin_rpcs_are_refused_without_token_authentication(running: ServerThread, templates: Path,
                                                             repo: Path) -> None:
    publish(templates, repo, 2)
    for call, request in ((admin(running).ReloadModel, apb.ReloadModelRequest(version=2)),
                          (admin(running).GetModelStatus, apb.GetModelStatusRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=TIMEOUT, metadata=AUTH)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "--auth-token-file" in info.value.details()
    assert predict(running).model.version == 1


def test_client_cli_status_and_reload(admin_server: ServerThread, templates: Path, repo: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from client.__main__ import main

    token_file = tmp_path / "client-token.txt"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    connect = ["--server", admin_server.address, "--token-file", str(token_file)]
    publish(templates, repo, 2)
    assert main(["reload", *connect]) == 0  # no --version: the highest present
    reply = json.loads(capsys.readouterr().out)
    assert (reply["previous_version"], reply["version"], reply["outcome"]) == (1, 2, "switched")
    assert main(["status", *connect]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["version"], status["last_reload"]["trigger"], status["last_reload"]["outcome"]) == \
        (2, "admin", "switched")
    assert main(["reload", "--version", "7", *connect]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["status", "--server", admin_server.address]) == 1  # no token
    assert "UNAUTHENTICATED" in capsys.readouterr().err
