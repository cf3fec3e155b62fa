"""``sentiment.v1.ModelAdmin``: hot reload and model status over gRPC, only behind token authentication."""

from __future__ import annotations

import grpc

from protos.sentiment.v1 import admin_pb2 as pb
from protos.sentiment.v1 import admin_pb2_grpc as pb_grpc
from serve.engine.core import InferenceCore
from serve.lifecycle.reload import TRIGGER_ADMIN, ModelReloader, ReloadAttempt
from serve.ops.errors import AdminDisabled, InvalidInput
from serve.ops.settings import Settings


def _attempt(attempt: ReloadAttempt) -> pb.ReloadAttempt:
    return pb.ReloadAttempt(trigger=attempt.trigger, version=attempt.version, outcome=attempt.outcome,
                            message=attempt.message, finished_unix_s=attempt.finished_unix_s)


class ModelAdminServicer(pb_grpc.ModelAdminServicer):
    """ReloadModel and GetModelStatus; the token check itself is the auth interceptor's (serve/ops/security.py)."""

    def __init__(self, core: InferenceCore, reloader: ModelReloader, settings: Settings) -> None:
        self._core = core
        self._reloader = reloader
        self._settings = settings

    def _check_enabled(self) -> None:
        # Without tokens anyone who reaches the port could swap the model: refuse instead.
        if self._settings.auth_token_file is None:
            raise AdminDisabled("ModelAdmin is disabled because this server has no token authentication; "
                                "start it with --auth-token-file (SENTIMENT_AUTH_TOKEN_FILE) to enable it")

    async def ReloadModel(self, request: pb.ReloadModelRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ReloadModelResponse:
        self._check_enabled()
        if request.version < 0:
            raise InvalidInput(f"version is {request.version}: give a version number, or 0 for the highest present")
        attempt = await self._reloader.reload(request.version or None, TRIGGER_ADMIN)
        return pb.ReloadModelResponse(model=self._core.model.name, previous_version=attempt.previous_version,
                                      version=attempt.served_version, outcome=attempt.outcome,
                                      message=attempt.message)

    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context: grpc.aio.ServicerContext
                             ) -> pb.GetModelStatusResponse:
        self._check_enabled()
        loaded = self._core.loaded
        last = self._reloader.last
        poll_s = self._settings.repository_poll_s if self._settings.watch_repository else 0.0
        return pb.GetModelStatusResponse(model=loaded.model.name, version=loaded.model.version,
                                         precision=self._settings.precision, device=loaded.runner.device,
                                         repository_poll_s=poll_s,
                                         last_reload=_attempt(last) if last is not None else None)
