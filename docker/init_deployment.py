"""One-shot set-up of the compose deployment, run by the ``init`` service before anything else.

Idempotent, so ``docker compose up`` may run it on every start:
  1. the S3 bucket of the zones, the Triton repository, the Feast registry and MLflow's artifacts;
  2. the raw export uploaded to ``source.path`` when that object is missing and /import has it;
  3. an empty Triton repository prefix, so Triton (explicit mode) starts before the first deploy;
  4. Airflow's metadata schema (``airflow db migrate``);
  5. the Feast registry (``apply``), so the API resolves its FeatureService before the first materialize.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("init_deployment")

# Where the raw export is found for upload: the compose mount, or the native cluster's data folder.
IMPORT_DIR = Path(os.environ.get("PROPENSITY_IMPORT_DIR", "/import"))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/parts`` -> (bucket, key/parts)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"expected an s3:// URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def main() -> int:
    """Run every step; any failure stops compose (the other services wait for this one)."""
    import boto3
    from botocore.exceptions import ClientError

    from propensity.core.settings import get_settings
    from propensity.features.store import feature_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if settings.profile != "prod":
        log.error("the compose deployment runs the prod profile, not %r", settings.profile)
        return 2
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)

    uris = [
        settings.zone_root,
        settings.serving.repository,
        settings.features.registry,
        settings.training.mlflow_artifact_root,
    ]
    for bucket in sorted({split_s3(u)[0] for u in uris if u.startswith("s3://")}):
        try:
            s3.head_bucket(Bucket=bucket)
            log.info("bucket %s exists", bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)
            log.info("bucket %s created", bucket)

    if settings.source.path.startswith("s3://"):
        bucket, key = split_s3(settings.source.path)
        local = IMPORT_DIR / Path(key).name
        try:
            s3.head_object(Bucket=bucket, Key=key)
            log.info("source %s present", settings.source.path)
        except ClientError:
            if local.is_file():
                s3.upload_file(str(local), bucket, key)
                log.info("source uploaded: %s -> %s", local, settings.source.path)
            else:
                log.warning("source %s missing and %s absent: upload it before the first run", key, local)

    if settings.serving.repository.startswith("s3://"):
        bucket, prefix = split_s3(settings.serving.repository)
        # S3 has no folders: Triton needs at least one key under the prefix to accept the repository.
        s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/.keep", Body=b"")

    subprocess.run(["airflow", "db", "migrate"], check=True)
    feature_store(settings, apply=True)
    log.info("Feast registry applied at %s", settings.features.registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "split_s3"]
