"""The model repository: the only thing that passes from export to serving.

Layout (Triton's, so a Triton server with the onnxruntime backend can load the ONNX part)::

    <repository>/<name>/config.pbtxt
    <repository>/<name>/<version>/model.onnx          fp32
    <repository>/<name>/<version>/model.int8.onnx     dynamically quantized
    <repository>/<name>/<version>/tokenizer.json      cleaning + subword tokenizer
    <repository>/<name>/<version>/metadata.json       see docs/model-repository.md

:func:`load_version` verifies a version (every file's sha256, the declared inputs and
outputs against the ONNX graph) and refuses a damaged one with :class:`RepositoryError`
naming the file and the problem. Nothing here unpickles anything.

Containment: every model, version and file path is resolved (symlinks followed) and refused
when it lands outside the repository root. Version folders are named by ASCII digits (``1``,
``2``...); any other entry is ignored, and said so once per model folder and name. Error
messages name paths relative to the root (``imdb-lstm/3/model.onnx``) and carry no sizes
or digests: they reach clients that hold a token (ReloadModel, KServe errors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
from tokenizers import Tokenizer

METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
PRECISION_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
TOKENIZER_FILE = "tokenizer.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# ONNX Runtime's type strings for the datatypes metadata.json declares (KServe v2 names).
ORT_TYPES = {"INT64": "tensor(int64)", "INT32": "tensor(int32)", "FP32": "tensor(float)"}
REQUIRED_METADATA = ("name", "version", "labels", "max_tokens", "head_tokens", "unk_id", "pad_id",
                     "inputs", "outputs", "files")


def rows_per_run(precision: str, rows: int) -> int:
    """Rows one ONNX Runtime call may hold at ``precision``, on every path: ``rows`` for fp32, 1 for int8.

    The int8 graph is dynamically quantized: its DynamicQuantizeLinear and DynamicQuantizeLSTM
    nodes derive one scale and zero point from the minimum and maximum of the whole input
    tensor (ONNX operator spec, DynamicQuantizeLinear), so a row's result depends on its
    batch-mates and on padding (up to 1.1e-3 measured on the shipped model). Scoring each
    int8 text alone makes its answer the same on the server, ``--local`` and ``--ray``.
    """
    return rows if precision == "fp32" else 1


log = logging.getLogger("serve.repository")
# (model folder, entry name) of ignored version entries already logged: each is said once.
_IGNORED_LOGGED: set[tuple[str, str]] = set()


class RepositoryError(ValueError):
    """A model repository, model or version is missing, malformed, damaged or reaches outside the root."""


def shown(path: Path) -> str:
    """``path`` as errors show it: relative to the repository root, whose layout puts every file at
    ``<name>/<version>/<file>`` (the root's own location stays out of messages sent to clients)."""
    return "/".join(path.parts[-3:]) if len(path.parts) >= 3 else path.name


def contained(root: Path, path: Path, what: str) -> Path:
    """``path`` with symlinks resolved; raises RepositoryError when that lies outside ``root`` (resolved)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        raise RepositoryError(f"{what} {relative} resolves outside the model repository root (a symlink?); "
                              "only files inside the repository are served")
    return resolved


def _is_version_name(name: str) -> bool:
    """A version folder's name: ASCII digits for a positive number (Triton's rule; '²' or '١' are not)."""
    return name.isascii() and name.isdigit() and int(name) > 0


@dataclass(frozen=True)
class ModelVersion:
    """A verified model version and what serving needs to know about it."""

    name: str
    version: int
    path: Path
    metadata: dict[str, Any]

    @property
    def labels(self) -> tuple[str, str]:
        """(label for P(positive) < threshold, label for >= threshold)."""
        negative, positive = self.metadata["labels"]
        return negative, positive

    @property
    def threshold(self) -> float:
        return float(self.metadata.get("threshold", 0.5))

    @property
    def max_tokens(self) -> int:
        return int(self.metadata["max_tokens"])

    @property
    def head_tokens(self) -> int:
        return int(self.metadata["head_tokens"])

    @property
    def unk_id(self) -> int:
        return int(self.metadata["unk_id"])

    @property
    def pad_id(self) -> int:
        return int(self.metadata["pad_id"])

    @property
    def root(self) -> Path:
        """The repository root this version was loaded from."""
        return self.path.parent.parent

    def model_path(self, precision: str = "fp32") -> Path:
        if precision not in PRECISION_FILES or PRECISION_FILES[precision] not in self.metadata["files"]:
            available = [p for p, f in PRECISION_FILES.items() if f in self.metadata["files"]]
            raise RepositoryError(f"{self.name} version {self.version} has no {precision!r} model; "
                                  f"available precisions: {available}")
        return self.path / PRECISION_FILES[precision]

    def load_tokenizer(self) -> Tokenizer:
        path = contained(self.root, self.path / TOKENIZER_FILE, "file")
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise RepositoryError(f"{shown(self.path / TOKENIZER_FILE)}: not a valid tokenizer file "
                                  f"({_scrubbed(exc, self.root)})") from exc


def check_name(name: str) -> str:
    """Refuse model names that could escape the repository root ('..', '/', ...)."""
    if not _NAME.match(name) or name in (".", ".."):
        raise RepositoryError(f"invalid model name {name!r}: use letters, digits, '_', '.', '-' "
                              "(starting with a letter or digit)")
    return name


def _scrubbed(exc: BaseException, root: Path) -> str:
    """An exception's text with the repository root's location removed (libraries quote full paths)."""
    text = str(exc)
    for prefix in {str(root.resolve()), str(root)}:
        text = text.replace(prefix + "/", "").replace(prefix, "<repository>")
    return text


def list_versions(repository: str | Path, name: str) -> list[int]:
    """Version numbers present for ``name`` (folders named by ASCII digits), ascending.

    Raises RepositoryError when the model folder is missing or resolves outside the root. Version
    entries with another name, or resolving outside the root, are skipped (logged once each).
    """
    root = Path(repository)
    model_dir = root / check_name(name)
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {name!r} in the model repository (no folder {name}/)")
    contained(root, model_dir, "model folder")
    versions = []
    for entry in model_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # staging folders (.tmp-*) and files such as config.pbtxt
        if not _is_version_name(entry.name):
            _ignore_once(model_dir, entry.name, "a version folder is named by ASCII digits (1, 2, ...)")
            continue
        try:
            contained(root, entry, "version folder")
        except RepositoryError as exc:
            _ignore_once(model_dir, entry.name, str(exc))
            continue
        versions.append(int(entry.name))
    return sorted(versions)


def _ignore_once(model_dir: Path, entry: str, reason: str) -> None:
    key = (str(model_dir), entry)
    if key not in _IGNORED_LOGGED:
        _IGNORED_LOGGED.add(key)
        log.warning("ignoring an entry of the model folder", extra={"model": model_dir.name, "entry": entry,
                                                                    "reason": reason})


def resolve_version(repository: str | Path, name: str, version: int | None) -> int:
    """``version`` itself if present; ``None`` means the highest version."""
    versions = list_versions(repository, name)
    if version is None:
        if not versions:
            raise RepositoryError(f"model {name!r} has no version folder (1/, 2/, ...) in the model repository")
        return versions[-1]
    if version not in versions:
        entry = Path(repository) / name / str(version)
        if entry.is_dir():  # there, but skipped: say why
            contained(Path(repository), entry, "version folder")
        raise RepositoryError(f"model {name!r} has no version {version}; present: {versions}")
    return version


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(version_dir: Path, root: Path | None = None) -> dict[str, Any]:
    """The version's metadata.json, its required fields checked; ``root`` (default: two levels up)
    is the repository root it must resolve inside."""
    path = version_dir / METADATA_FILE
    if not path.is_file():
        raise RepositoryError(f"{shown(path)} is missing: every version needs its metadata.json")
    path = contained(root or version_dir.parent.parent, path, "file")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{shown(version_dir / METADATA_FILE)} is not valid JSON ({exc})") from exc
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise RepositoryError(f"{shown(version_dir / METADATA_FILE)} lacks required fields {missing}")
    return metadata


def verify_files(version_dir: Path, metadata: dict[str, Any], root: Path | None = None) -> None:
    """Every file listed in metadata lies inside the root and has the recorded size and sha256.

    The messages say which file and what kind of mismatch, never the sizes or digests.
    """
    root = root or version_dir.parent.parent
    listing = shown(version_dir / METADATA_FILE)
    for filename, record in metadata["files"].items():
        path = version_dir / filename
        if Path(filename).name != filename or filename in (".", ".."):
            raise RepositoryError(f"{listing} lists {filename!r}: only plain file names allowed")
        if not path.is_file():
            raise RepositoryError(f"{shown(path)} is missing (listed in metadata.json)")
        path = contained(root, path, "file")
        if path.stat().st_size != record["bytes"]:
            raise RepositoryError(f"{shown(version_dir / filename)} differs in size from metadata.json: "
                                  "truncated or replaced; re-export this version")
        if sha256_of(path) != record["sha256"]:
            raise RepositoryError(f"{shown(version_dir / filename)} does not match its sha256 in metadata.json: "
                                  "the file is corrupted or was changed; re-export this version")
    for required in (PRECISION_FILES["fp32"], TOKENIZER_FILE):
        if required not in metadata["files"]:
            raise RepositoryError(f"{listing} does not list {required}")


def load_version(repository: str | Path, name: str, version: int | None = None) -> ModelVersion:
    """Resolve, read and verify a version's files (checksums and sizes).

    The graph's inputs and outputs are checked against metadata when a session is opened
    (:func:`open_session`), since that is when the graph is parsed anyway.
    """
    root = Path(repository).resolve()
    number = resolve_version(root, name, version)
    version_dir = root / name / str(number)
    contained(root, version_dir, "version folder")  # listed ones are, but it may have changed since
    metadata = read_metadata(version_dir, root)
    if metadata["name"] != name or int(metadata["version"]) != number:
        raise RepositoryError(f"{shown(version_dir / METADATA_FILE)} describes {metadata['name']!r} version "
                              f"{metadata['version']}, but sits at {name}/{number}")
    verify_files(version_dir, metadata, root)
    loaded = ModelVersion(name, number, version_dir, metadata)
    loaded.load_tokenizer()  # fail now, not at the first request
    return loaded


def check_signature(session: ort.InferenceSession, model: ModelVersion, path: Path) -> None:
    """The graph's input/output names, types and ranks match what metadata.json declares."""
    for kind, declared, actual in (("input", model.metadata["inputs"], session.get_inputs()),
                                   ("output", model.metadata["outputs"], session.get_outputs())):
        graph = {arg.name: arg for arg in actual}
        if sorted(graph) != sorted(d["name"] for d in declared):
            raise RepositoryError(f"{shown(path)}: graph {kind}s {sorted(graph)} differ from metadata.json's "
                                  f"{sorted(d['name'] for d in declared)}")
        for spec in declared:
            arg = graph[spec["name"]]
            if arg.type != ORT_TYPES.get(spec["datatype"]) or len(arg.shape) != len(spec["shape"]):
                raise RepositoryError(f"{shown(path)}: {kind} {arg.name!r} is {arg.type} rank {len(arg.shape)}, "
                                      f"metadata.json declares {spec['datatype']} shape {spec['shape']}")


def open_session(model: ModelVersion, precision: str, options: ort.SessionOptions | None = None,
                 providers: list[Any] | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session for ``precision``, its signature checked against metadata."""
    path = model.model_path(precision)
    real = contained(model.root, path, "file")
    try:
        session = ort.InferenceSession(str(real), sess_options=options,
                                       providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise RepositoryError(f"{shown(path)}: ONNX Runtime cannot load it ({_scrubbed(exc, model.root)})") from exc
    check_signature(session, model, path)
    return session
