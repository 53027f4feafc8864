"""Object stores: a local folder (default) or S3 / any S3-compatible endpoint."""

from spotline.settings import StoreSettings
from spotline.storage.base import ObjectNotFound, ObjectStore, UnsafeObject


def make_store(settings: StoreSettings, bucket: str | None = None) -> ObjectStore:
    if settings.kind == "s3":
        from spotline.storage.s3 import S3ObjectStore

        return S3ObjectStore(settings, bucket=bucket)
    from spotline.storage.local import LocalObjectStore

    return LocalObjectStore(settings.root)


__all__ = ["make_store", "ObjectStore", "ObjectNotFound", "UnsafeObject"]
