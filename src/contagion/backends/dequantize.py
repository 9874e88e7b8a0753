"""Float weights for a quantised GGUF file, so that llama.cpp computes what transformers computes.

llama.cpp multiplies quantised weights (Q4_1, Q8_0, K-quants, ...) with activations that it first
rounds to 8-bit blocks; transformers de-quantises the same weights to float32 and multiplies in float32.
On SmolLM2-135M that alone moves first-token trait scores by 0.04 at the median and 0.08 at most
(measured on 24 items), although the weights are the same numbers. Written once as a float GGUF file
(each quantised tensor de-quantised by ``gguf``, the same routine transformers uses; everything else
copied), llama.cpp runs its float kernels on exactly those numbers and the two backends agree to 0.001
(float32) or 0.003 (float16) per item. On this project's 2-core CPU llama.cpp scores fastest on the
float32 file and generates slowest (a generated token reads every weight: 540 MB instead of 98 MB);
``benchmarks/bench_weights.py`` prints both.

The file is written once per source file and precision into the cache directory
(:envvar:`CONTAGION_CACHE_DIR`, else ``$XDG_CACHE_HOME/contagion``, else ``~/.cache/contagion``),
tensor by tensor (memory stays at one tensor), under a lock (processes that start together write it
once), to a temporary name renamed into place (an interrupted write leaves nothing half-written).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contagion.errors import BackendUnavailableError

PRECISIONS = ("f32", "f16")
"""Float precisions a quantised file can be run in (``q4_1``-style "as shipped" is the file itself)."""

CONVERTER_VERSION = 1
"""Bumped when the written file would differ, so stale cache files are never reused."""

CACHE_ENV = "CONTAGION_CACHE_DIR"


def cache_dir() -> Path:
    """Where de-quantised model files are kept."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "contagion"


def float_path(source: Path, precision: str) -> Path:
    """The cache file that holds ``source`` in ``precision`` (it may not exist yet). Its name is keyed by
    the source's resolved path, size and modification time (cheap to compute at every load), not by a
    hash of its content: a file replaced in place keeps its key only if size and mtime both match."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"unknown weight precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    stat = source.stat()
    key = hashlib.sha256(
        f"{CONVERTER_VERSION}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    return cache_dir() / "models" / f"{source.stem}.{precision}.{key}.gguf"


def float_gguf(source: str | Path, precision: str = "f32", *, announce: bool = True) -> Path:
    """``source`` with every quantised tensor de-quantised to ``precision``; written on first use.

    Raises :class:`BackendUnavailableError` (with what to do) when ``gguf`` is missing, the source is
    not a readable GGUF file, or the cache directory cannot hold the result.
    """
    source = Path(source)
    target = float_path(source, precision)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_suffix(".lock")):
            if target.is_file():  # another process wrote it while this one waited
                return target
            if announce:
                print(f"contagion: writing {source.name} as {precision} weights (once) to {target}", file=sys.stderr)
            _write(source, target, precision)
    except OSError as exc:
        raise BackendUnavailableError(
            f"could not write the {precision} weights of {source.name} to {target.parent} ({exc.strerror or exc}); "
            f"free space there, point {CACHE_ENV} at another directory, or run the file as shipped "
            f"with ?weights=asis"
        ) from None
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: concurrent first uses may each convert; the rename stays atomic
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(source: Path, target: Path, precision: str) -> None:
    try:
        import gguf
        import numpy as np
    except ImportError:
        raise BackendUnavailableError(
            "float weights for a GGUF file need the package 'gguf'. Install it with: pip install gguf"
        ) from None
    try:
        reader = gguf.GGUFReader(source)
    except (ValueError, OSError) as exc:
        raise BackendUnavailableError(f"{source} is not a readable GGUF file ({exc})") from None
    dtype = np.float32 if precision == "f32" else np.float16
    kinds = gguf.GGMLQuantizationType
    kept = {kinds.F32, kinds.F64, kinds.I8, kinds.I16, kinds.I32, kinds.I64}
    if precision == "f16":
        kept.add(kinds.F16)

    def converted(tensor: Any) -> Any:
        shape = [int(x) for x in reversed(tensor.shape)]
        if tensor.tensor_type in kept:
            return np.asarray(tensor.data).reshape(shape)
        return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(dtype)

    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".gguf")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        arch = reader.fields["general.architecture"].contents()
        writer = gguf.GGUFWriter(tmp, arch)
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            value = field.contents()
            if name == "general.file_type":
                value = 0 if precision == "f32" else 1  # llama.cpp's ALL_F32 / MOSTLY_F16
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
            writer.add_key_value(name, value, vtype, sub_type=sub)
        for tensor in reader.tensors:  # the shapes and types first, then the data one tensor at a time
            out_dtype = np.asarray(tensor.data).dtype if tensor.tensor_type in kept else np.dtype(dtype)
            n = int(np.prod([int(x) for x in tensor.shape]))
            writer.add_tensor_info(tensor.name, [int(x) for x in reversed(tensor.shape)], out_dtype,
                                   n * out_dtype.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(converted(tensor))
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
