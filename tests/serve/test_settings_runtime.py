"""Settings (flags over env over defaults) and the runtime's CPU accounting and provider choice."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from serve.errors import ConfigurationError
from serve.runtime import (
    cgroup_cpu_limit,
    providers_for,
    session_options,
    thread_plan,
    usable_cpus,
    warmup_lengths,
)
from serve.settings import Settings, load_settings


def test_flag_beats_env_beats_default() -> None:
    settings = load_settings(["--max-batch-size", "8", "--no-warmup"],
                             {"SENTIMENT_MAX_BATCH_SIZE": "99", "SENTIMENT_PORT": "0",
                              "SENTIMENT_ALLOW_CPU_FALLBACK": "true", "SENTIMENT_MAX_QUEUE_DELAY_MS": "1.5",
                              "SENTIMENT_MODEL_REPOSITORY": "/srv/models"})
    assert settings.max_batch_size == 8 and settings.port == 0 and settings.allow_cpu_fallback
    assert settings.max_queue_delay_ms == 1.5 and settings.model_repository == Path("/srv/models")
    assert settings.warmup is False and settings.metrics_port == 8002 and settings.version_number is None


def test_every_field_is_a_flag_and_an_env_var() -> None:
    for field in dataclasses.fields(Settings):
        if field.name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            continue  # they must name real files, in pairs: tests/serve/test_security.py sets them
        value = "cuda" if field.name == "device" else "int8" if field.name == "precision" else \
            "debug" if field.name == "log_level" else "3" if field.name == "version" else \
            "steps" if field.name == "batching" else \
            "false" if isinstance(field.default, bool) else "2048"
        settings = load_settings([], {f"SENTIMENT_{field.name.upper()}": value})
        assert str(getattr(settings, field.name)).lower() in (value, "2048.0"), field.name


@pytest.mark.parametrize(("argv", "environ", "needle"), [
    (["--max-batch-size", "0"], {}, "max_batch_size must be >= 1"),
    (["--version", "abc"], {}, "positive integer or 'latest'"),
    ([], {"SENTIMENT_PORT": "eighty"}, "SENTIMENT_PORT='eighty'"),
    ([], {"SENTIMENT_DEVICE": "tpu"}, "choose from"),
    ([], {"SENTIMENT_WARMUP": "maybe"}, "not a boolean"),
    (["--max-texts-per-request", "64", "--max-queue-size", "32"], {}, "could never be admitted"),
])
def test_bad_settings_are_refused_with_the_reason(argv, environ, needle) -> None:
    with pytest.raises(ConfigurationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_settings(argv, environ)


def test_cgroup_v2_and_v1_quotas(tmp_path: Path) -> None:
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/pod/app\n")
    (tmp_path / "pod" / "app").mkdir(parents=True)
    (tmp_path / "pod" / "app" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path, self_cgroup) == 1.5
    (tmp_path / "pod" / "app" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path, self_cgroup) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1, tmp_path / "missing") == 0.5
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_threads_default_to_one_run_per_usable_cpu_and_arena_is_off() -> None:
    assert thread_plan(Settings()) == (usable_cpus(), 1)
    assert thread_plan(Settings(workers=1)) == (1, usable_cpus())
    assert thread_plan(Settings(workers=1, intra_op_threads=3)) == (1, 3)
    assert thread_plan(Settings(intra_op_threads=usable_cpus())) == (1, usable_cpus())  # no oversubscription
    options = session_options(Settings())
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert session_options(Settings(intra_op_threads=3)).intra_op_num_threads == 3


def test_cuda_without_cuda_is_an_error_unless_fallback_is_allowed() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ConfigurationError, match="--allow-cpu-fallback"):
        providers_for(Settings(device="cuda"))
    assert providers_for(Settings(device="cuda", allow_cpu_fallback=True)) == ["CPUExecutionProvider"]


def test_warmup_buckets_reach_max_tokens() -> None:
    assert warmup_lengths(400) == [1, 4, 16, 64, 256, 400]
    assert warmup_lengths(1) == [1]
