"""Triton's extensions of the KServe v2 protocol, as messages (pure functions, no gRPC calls).

``ModelConfig``, ``ModelStatistics`` and ``RepositoryIndex`` are not in KServe's protocol,
but Triton serves them in the same ``inference.GRPCInferenceService`` and its tools depend
on them: perf_analyzer reads the model configuration before it sends a request, and reports
the server-side queue and compute times from the statistics.
"""

from __future__ import annotations

from pathlib import Path

from protos.inference import grpc_predict_v2_pb2 as pb
from protos.inference import model_config_pb2 as config_pb
from runtime.repository import RepositoryError, list_versions
from serve.engine.statistics import Duration, StatisticsSnapshot
from serve.grpc import kserve_codec as codec

EXTENSIONS = ("model_configuration", "statistics")
_DATA_TYPES = {"BYTES": config_pb.TYPE_STRING, "FP32": config_pb.TYPE_FP32}


def model_config(name: str, model_file: str, device: str, workers: int, max_queue_delay_ms: float
                 ) -> config_pb.ModelConfig:
    """The served model described as a Triton model configuration.

    ``max_batch_size`` is 0 and every tensor has dims [-1]: the batch is the text tensor's
    own dimension, as ModelMetadata says, and the server batches across requests itself.
    """
    kind = config_pb.ModelInstanceGroup.KIND_GPU if device == "cuda" else config_pb.ModelInstanceGroup.KIND_CPU
    return config_pb.ModelConfig(
        name=name, platform="onnxruntime_onnx", backend="onnxruntime", max_batch_size=0,
        input=[config_pb.ModelInput(name=codec.INPUT, data_type=config_pb.TYPE_STRING, dims=[-1])],
        output=[config_pb.ModelOutput(name=output, data_type=_DATA_TYPES[datatype], dims=[-1])
                for output, datatype in codec.OUTPUTS.items()],
        instance_group=[config_pb.ModelInstanceGroup(name=name, count=workers, kind=kind)],
        default_model_filename=model_file,
        dynamic_batching=config_pb.ModelDynamicBatching(max_queue_delay_microseconds=round(max_queue_delay_ms * 1000)))


def _duration(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def model_statistics(name: str, version: int, totals: StatisticsSnapshot) -> pb.ModelStatistics:
    """The served version's totals as Triton reports them."""
    return pb.ModelStatistics(
        name=name, version=str(version), last_inference=totals.last_inference_ms,
        inference_count=totals.inference_count, execution_count=totals.execution_count,
        inference_stats=pb.InferStatistics(success=_duration(totals.success), fail=_duration(totals.fail),
                                           queue=_duration(totals.queue),
                                           compute_input=_duration(totals.compute_input),
                                           compute_infer=_duration(totals.compute_infer),
                                           compute_output=_duration(totals.compute_output)),
        batch_stats=[pb.InferBatchStatistics(batch_size=size,
                                             compute_input=pb.StatisticDuration(count=t.count, ns=t.input_ns),
                                             compute_infer=pb.StatisticDuration(count=t.count, ns=t.infer_ns),
                                             compute_output=pb.StatisticDuration(count=t.count, ns=t.output_ns))
                     for size, t in totals.batches.items()])


def repository_index(repository: Path, served: tuple[str, int] | None, ready_only: bool
                     ) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    """Every model version folder in ``repository``: READY for the ``served`` (name, version), UNAVAILABLE for the rest.

    ``served`` None: nothing is served yet (loading) or any more (shutting down).
    """
    reason = ("not served: the server is loading its model or shutting down" if served is None
              else f"not served: this server serves {served[0]!r} version {served[1]}")
    index = pb.RepositoryIndexResponse.ModelIndex
    entries = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()) if repository.is_dir() else []:
        try:
            versions = list_versions(repository, model_dir.name)
        except RepositoryError:  # not a model folder (a bad name): nothing to report
            continue
        for version in versions:
            if (model_dir.name, version) == served:
                entries.append(index(name=model_dir.name, version=str(version), state="READY"))
            elif not ready_only:
                entries.append(index(name=model_dir.name, version=str(version), state="UNAVAILABLE", reason=reason))
    return entries
