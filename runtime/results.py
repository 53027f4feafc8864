"""Where Prefect persists task results: inside the object store (a folder locally, S3 in aws).

Persisted results are what let a re-run of a crashed flow run load finished batches instead of
redoing them. Prefect wants result storage it can find again from any process: a local path, or
a saved block referenced by slug, which ``python -m deployments apply`` (and ``spotline setup``) saves.
"""

from __future__ import annotations

from pathlib import Path

from spotline.settings import Settings


def result_storage(settings: Settings) -> str | Path:
    if settings.store.kind == "s3":
        return f"s3-bucket/{settings.prefect.results_block}"
    return settings.store.root / settings.layout.prefect_results.strip("/")


def result_storage_block(settings: Settings):
    """The S3Bucket block the flows' result_storage slug names (not saved: deployments.apply saves it)."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    s = settings.store
    creds = AwsCredentials(
        aws_access_key_id=s.access_key_id.get_secret_value() if s.access_key_id else None,
        aws_secret_access_key=s.secret_access_key,
        region_name=s.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=s.endpoint_url),
    )
    return S3Bucket(bucket_name=s.bucket, bucket_folder=settings.layout.prefect_results.strip("/"), credentials=creds)


def save_result_storage_block(settings: Settings) -> str:
    """Save the S3Bucket block the flows' result_storage slug names (idempotent)."""
    result_storage_block(settings).save(settings.prefect.results_block, overwrite=True)
    return f"s3-bucket/{settings.prefect.results_block}"
