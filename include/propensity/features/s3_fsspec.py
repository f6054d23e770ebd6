"""fsspec's ``s3://`` protocol on pyarrow's S3 filesystem, for Feast's file offline store.

Feast reads a file source through dask, and dask opens ``s3://`` through fsspec, which needs s3fs.
s3fs cannot be installed beside this project's boto3: every aiobotocore release pins botocore to a
narrow range far below the pinned 1.44 (pip's resolver: ResolutionImpossible). pyarrow already
speaks S3 (the zones use it), and fsspec wraps any pyarrow filesystem (``ArrowFSWrapper``): this
registers that wrapper as ``s3`` when s3fs is absent, honouring the endpoint and keys Feast passes
(``storage_options``) or, without them, the standard ``AWS_*`` environment variables.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.implementations.arrow import ArrowFSWrapper


class ArrowS3FileSystem(ArrowFSWrapper):
    protocol = ("s3", "s3a")
    root_marker = ""

    def __init__(
        self,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import pyarrow.fs as pafs

        options: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if key and secret:
            options |= {"access_key": key, "secret_key": secret}
            if token:
                options["session_token"] = token
        endpoint = (client_kwargs or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options |= {"endpoint_override": host or scheme, "scheme": scheme if host else "https"}
            options["force_virtual_addressing"] = False  # MinIO and moto serve path-style URLs
        kwargs.pop("anon", None)
        super().__init__(pafs.S3FileSystem(**options), **kwargs)

    @classmethod
    def _strip_protocol(cls, path):  # type: ignore[override]
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        for prefix in ("s3://", "s3a://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith("s3://") else f"s3://{name}"


def register_s3_fsspec() -> bool:
    """Register :class:`ArrowS3FileSystem` as fsspec's ``s3`` unless s3fs is installed; True if it did."""
    import importlib.util

    import fsspec

    if importlib.util.find_spec("s3fs") is not None:
        return False
    fsspec.register_implementation("s3", ArrowS3FileSystem, clobber=True)
    fsspec.register_implementation("s3a", ArrowS3FileSystem, clobber=True)
    return True
