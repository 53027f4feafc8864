"""Where Prefect persists task results: inside the object store (a folder locally, S3 in aws).

Persisted results are what let a re-run of a crashed flow run load finished batches instead of
redoing them. Prefect wants result storage it can find again from any process: a local path, or
a saved block referenced by slug. ``save_result_storage_block`` saves the S3 one (``spotline setup``).
"""

from __future__ import annotations

from pathlib import Path

from spotline.settings import Settings


def result_storage(settings: Settings) -> str | Path:
    if settings.store.kind == "s3":
        return f"s3-bucket/{settings.prefect.results_block}"
    return settings.store.root / settings.prefect.results_prefix.strip("/")


def save_result_storage_block(settings: Settings) -> str:
    """Save the S3Bucket block the flows' result_storage slug names (idempotent)."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    s = settings.store
    creds = AwsCredentials(
        aws_access_key_id=s.access_key_id.get_secret_value() if s.access_key_id else None,
        aws_secret_access_key=s.secret_access_key,
        region_name=s.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=s.endpoint_url),
    )
    block = S3Bucket(bucket_name=s.bucket, bucket_folder=settings.prefect.results_prefix.strip("/"), credentials=creds)
    block.save(settings.prefect.results_block, overwrite=True)
    return f"s3-bucket/{settings.prefect.results_block}"
