"""ObjectStore contract on both back-ends: a local folder and S3 (moto server on 127.0.0.1)."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from castai_focus_dagster.settings import load_settings
from castai_focus_dagster.storage.object_store import (
    TMP_DIR,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    PreconditionFailed,
    S3ObjectStore,
    object_store_from_settings,
)
from castai_focus_dagster_tests.reliability.s3_proxy import Rule, S3FaultProxy
from castai_focus_dagster_tests.s3_server import (  # noqa: F401  (pytest fixtures)
    DUMMY_CREDENTIALS,
    HttpFaults,
    S3TestServer,
    s3_bucket_fixture,
    s3_server_fixture,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "out")
    server: S3TestServer = request.getfixturevalue("s3_server")
    return S3ObjectStore(server.client(), server.new_bucket())


def test_put_get_exists_overwrite(store: ObjectStore) -> None:
    key = "castai/version=focus-1.3/year=2025/month=03/day=04/a.parquet"
    assert not store.exists(key)
    store.put(key, b"first", "application/vnd.apache.parquet")
    assert store.exists(key)
    assert store.get(key) == b"first"
    store.put(key, b"second", "application/vnd.apache.parquet")
    assert store.get(key) == b"second"
    assert store.list("") == [key]  # overwrite, never a second object


def test_get_missing_is_a_key_error_naming_the_object(store: ObjectStore) -> None:
    with pytest.raises(KeyError) as excinfo:
        store.get("nope/missing.json")
    assert isinstance(excinfo.value, ObjectNotFound)
    assert store.describe("nope/missing.json") in str(excinfo.value)


def test_list_is_a_sorted_string_prefix_match(store: ObjectStore) -> None:
    keys = ["a/b/2.csv", "a/b/1.csv", "a/bc/x.csv", "a/c/y.csv", "top.json", "a/b/deep/z.csv"]
    for key in keys:
        store.put(key, key.encode(), "text/plain")
    assert store.list("") == sorted(keys)
    assert store.list("a/b/") == ["a/b/1.csv", "a/b/2.csv", "a/b/deep/z.csv"]
    # Like S3, a prefix need not end at a "/".
    assert store.list("a/b") == ["a/b/1.csv", "a/b/2.csv", "a/b/deep/z.csv", "a/bc/x.csv"]
    assert store.list("a/b/1") == ["a/b/1.csv"]
    assert store.list("zzz/") == []


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("x/y.json", b"{}", "application/json")
    store.delete("x/y.json")
    store.delete("x/y.json")
    assert not store.exists("x/y.json")
    assert store.list("") == []


def test_copy_makes_an_identical_object_and_missing_source_raises(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 64
    store.put("_staging/run/a.parquet", payload, "application/vnd.apache.parquet")
    store.copy("_staging/run/a.parquet", "final/a.parquet")
    assert store.get("final/a.parquet") == payload
    with pytest.raises(KeyError):
        store.copy("_staging/run/gone.parquet", "final/b.parquet")
    assert not store.exists("final/b.parquet")
    # The copy is an object of its own: replacing or deleting the source leaves it as it was.
    store.put("_staging/run/a.parquet", b"replaced", "application/vnd.apache.parquet")
    assert store.get("final/a.parquet") == payload
    store.delete("_staging/run/a.parquet")
    assert store.get("final/a.parquet") == payload


def test_open_file_reads_the_object_and_missing_raises(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one transfer chunk
    store.put("p/day.parquet", payload, "application/vnd.apache.parquet")
    with store.open_file("p/day.parquet") as data:
        assert data.read() == payload
        data.seek(0)
        assert data.read(3) == payload[:3]
    with pytest.raises(KeyError):
        store.open_file("p/gone.parquet")


def test_describe(store: ObjectStore, tmp_path: Path) -> None:
    if isinstance(store, S3ObjectStore):
        assert store.describe("p/k.csv") == f"s3://{store.bucket}/p/k.csv"
    else:
        assert store.describe("p/k.csv") == str((tmp_path / "out" / "p" / "k.csv").resolve())


# Local folder specifics --------------------------------------------------------------------------------


def test_local_copy_links_the_file_and_copies_bytes_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "out")
    store.put("_staging/a.parquet", b"day", "application/vnd.apache.parquet")
    store.copy("_staging/a.parquet", "final/a.parquet")
    staged, final = (tmp_path / "out" / "_staging" / "a.parquet"), (tmp_path / "out" / "final" / "a.parquet")
    assert final.stat().st_ino == staged.stat().st_ino  # linked: no bytes copied

    def no_links(*_args: Any) -> None:  # a file system without hard links (e.g. another device)
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    store.copy("_staging/a.parquet", "final/b.parquet")
    copied = tmp_path / "out" / "final" / "b.parquet"
    assert copied.read_bytes() == b"day" and copied.stat().st_ino != staged.stat().st_ino
    assert list((tmp_path / "out" / TMP_DIR).iterdir()) == []


def test_local_put_is_atomic_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("d/obj.csv", b"old", "text/csv")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put("d/obj.csv", b"new-and-longer", "text/csv")
    monkeypatch.undo()
    assert store.get("d/obj.csv") == b"old"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["obj.csv"]


def test_local_list_hides_in_flight_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("d/obj.csv", b"x", "text/csv")
    (tmp_path / "d" / ".obj.csv.abc123.tmp").write_bytes(b"partial")  # another writer mid-put
    assert store.list("") == ["d/obj.csv"]


def test_local_published_files_are_world_readable(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("d/obj.csv", b"x", "text/csv")
    assert stat.S_IMODE((tmp_path / "d" / "obj.csv").stat().st_mode) == 0o644


def test_local_delete_prunes_empty_folders_but_not_the_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    store.put("_staging/run-1/castai/version=focus-1.3/a.parquet", b"x", "x")
    store.put("keep/b.json", b"{}", "application/json")
    store.delete("_staging/run-1/castai/version=focus-1.3/a.parquet")
    # Only the store's own temporary folder (empty: every write renamed its file away) remains beside keep/.
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == sorted([TMP_DIR, "keep"])
    assert list((tmp_path / "root" / TMP_DIR).iterdir()) == []
    store.delete("keep/b.json")
    assert (tmp_path / "root").is_dir()


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "a//b", "./a"])
def test_local_rejects_keys_that_escape_or_alias(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        LocalObjectStore(tmp_path).put(key, b"x", "text/plain")


# S3 specifics ------------------------------------------------------------------------------------------


def test_s3_stores_the_content_type(s3_server: S3TestServer, s3_bucket: str) -> None:
    client = s3_server.client()
    S3ObjectStore(client, s3_bucket).put("k.csv", b"a,b\n", "text/csv; charset=utf-8")
    assert client.head_object(Bucket=s3_bucket, Key="k.csv")["ContentType"] == "text/csv; charset=utf-8"


def test_s3_list_follows_pagination(s3_server: S3TestServer, s3_bucket: str) -> None:
    store = S3ObjectStore(s3_server.client(), s3_bucket)
    keys = [f"p/{i:05d}.json" for i in range(1003)]  # S3 pages hold at most 1000 keys
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: store.put(k, b"{}", "application/json"), keys))
    store.put("q/other.json", b"{}", "application/json")
    assert store.list("p/") == keys


def test_s3_transient_error_is_retried(s3_server: S3TestServer, s3_bucket: str) -> None:
    client = s3_server.client(total_attempts=2)
    store = S3ObjectStore(client, s3_bucket)
    with HttpFaults(client, "PutObject", status=503, times=1).installed() as faults:
        store.put("k.json", b"{}", "application/json")
    assert faults.injected == 1
    assert store.get("k.json") == b"{}"


@pytest.mark.parametrize("operation", ["PutObject", "GetObject", "CopyObject", "DeleteObject", "HeadObject"])
def test_s3_persistent_error_names_operation_and_object(
    s3_server: S3TestServer, s3_bucket: str, operation: str
) -> None:
    client = s3_server.client(total_attempts=1)
    store = S3ObjectStore(client, s3_bucket)
    store.put("src.json", b"{}", "application/json")
    calls = {
        "PutObject": lambda: store.put("dst.json", b"{}", "application/json"),
        "GetObject": lambda: store.get("dst.json"),
        "CopyObject": lambda: store.copy("src.json", "dst.json"),
        "DeleteObject": lambda: store.delete("dst.json"),
        "HeadObject": lambda: store.exists("dst.json"),
    }
    with (
        HttpFaults(client, operation, key_contains="dst", times=5).installed(),
        pytest.raises(ObjectStoreError) as excinfo,
    ):
        calls[operation]()
    message = str(excinfo.value)
    assert operation in message
    assert f"s3://{s3_bucket}/dst.json" in message
    assert "InternalError" in message


# Construction from settings ----------------------------------------------------------------------------


def test_no_bucket_means_the_local_folder(tmp_path: Path) -> None:
    settings = load_settings({"CASTAI_API_URL": "sandbox", "LOCAL_OUTPUT_DIR": str(tmp_path / "data")})
    store = object_store_from_settings(settings)
    assert isinstance(store, LocalObjectStore)
    store.put("castai/x.json", b"{}", "application/json")
    assert (tmp_path / "data" / "castai" / "x.json").read_bytes() == b"{}"


def test_bucket_with_static_keys_and_endpoint_talks_to_s3(s3_server: S3TestServer, s3_bucket: str) -> None:
    secret = "Sup3rSecretValueThatMustNotLeak"
    settings = load_settings(
        {
            "CASTAI_API_URL": "sandbox",
            "S3_BUCKET": s3_bucket,
            "S3_ENDPOINT_URL": s3_server.endpoint_url,
            "S3_ACCESS_KEY_ID": "AKIATESTING",
            "S3_SECRET_ACCESS_KEY": secret,
        }
    )
    store = object_store_from_settings(settings)
    assert isinstance(store, S3ObjectStore)
    config: Any = store.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.s3 == {"addressing_style": "path"}
    assert store.client.meta.region_name == "us-east-1"
    store.put("k.json", b"{}", "application/json")
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="k.json")["Body"].read() == b"{}"
    # Neither the store's repr nor a failure message carries the secret.
    missing = S3ObjectStore(store.client, "no-such-bucket-for-this-test")
    with pytest.raises(ObjectStoreError) as excinfo:
        missing.put("k.json", b"{}", "application/json")
    assert secret not in str(excinfo.value) and secret not in repr(store)


def test_without_static_keys_the_default_credential_chain_is_used(
    s3_server: S3TestServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IRSA and instance roles arrive through boto3's default chain; env variables stand in for them here."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIALS["aws_secret_access_key"])
    settings = load_settings(
        {"CASTAI_API_URL": "sandbox", "S3_BUCKET": s3_bucket, "S3_ENDPOINT_URL": s3_server.endpoint_url}
    )
    store = object_store_from_settings(settings)
    assert isinstance(store, S3ObjectStore)
    client: Any = store.client
    credentials = client._request_signer._credentials
    assert credentials is not None and credentials.method == "env"
    store.put("k.json", b"{}", "application/json")
    assert store.get("k.json") == b"{}"


def test_client_factory_overrides_client_construction(s3_server: S3TestServer, s3_bucket: str) -> None:
    client = s3_server.client()
    settings = load_settings({"CASTAI_API_URL": "sandbox", "S3_BUCKET": s3_bucket})
    store = object_store_from_settings(settings, s3_client_factory=lambda: client)
    assert isinstance(store, S3ObjectStore) and store.client is client and store.bucket == s3_bucket


# Conditional writes, versions, start-up checks, temporary files -----------------------------------------


def test_version_changes_with_every_put_and_conditional_puts_compare_it(store: ObjectStore) -> None:
    key = "castai/metadata/focus-1.3/manifests/year=2025/month=03/day=04/manifest.json"
    assert store.version(key) is None
    store.put_if(key, b"{}", "application/json", None)  # absent, as expected
    first = store.version(key)
    assert first is not None
    with pytest.raises(PreconditionFailed, match="changed while this run was publishing"):
        store.put_if(key, b"{}", "application/json", None)  # no longer absent
    store.put(key, b'{"other": 1}', "application/json")  # another writer
    second = store.version(key)
    assert second not in (None, first)
    with pytest.raises(PreconditionFailed):
        store.put_if(key, b'{"mine": 1}', "application/json", first)  # stale version
    assert store.get(key) == b'{"other": 1}'
    store.put_if(key, b'{"mine": 2}', "application/json", second)
    assert store.get(key) == b'{"mine": 2}'


def test_local_temporary_files_live_outside_every_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "out")
    key = "castai/version=focus-1.3/year=2025/month=03/day=04/a.parquet"
    store.put(key, b"x", "x")
    assert [p.name for p in (tmp_path / "out" / key).parent.iterdir()] == ["a.parquet"]
    assert store.list("") == [key]  # the temporary folder is not part of the key space
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(f"{TMP_DIR}/x", b"x", "x")


def test_local_stale_temporary_files_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "out")
    folder = "castai/version=focus-1.3/year=2025/month=03/day=04/"
    store.put(folder + "a.parquet", b"x", "x")
    tmp = tmp_path / "out" / TMP_DIR
    stale, fresh = tmp / "a.parquet.dead.tmp", tmp / "a.parquet.live.tmp"
    legacy = tmp_path / "out" / folder / ".a.parquet.old.tmp"  # written next to its target by older versions
    for path in (stale, fresh, legacy):
        path.write_bytes(b"partial")
    two_hours_ago = stale.stat().st_mtime - 7200
    for path in (stale, legacy):
        os.utime(path, (two_hours_ago, two_hours_ago))
    removed = store.remove_stale_temporary((folder,))
    assert sorted(removed) == sorted([str(stale), str(legacy)])
    assert fresh.exists() and not stale.exists() and not legacy.exists()


def test_s3_missing_bucket_is_a_permanent_error_found_at_start(s3_server: S3TestServer) -> None:
    store = S3ObjectStore(s3_server.client(), "no-such-bucket-here")
    with pytest.raises(ObjectStoreError, match="no-such-bucket-here does not exist") as info:
        store.check_writable()
    assert info.value.permanent
    with pytest.raises(ObjectStoreError, match="NoSuchBucket") as put_info:
        store.put("a", b"x", "x")
    assert put_info.value.permanent
    S3ObjectStore(s3_server.client(), s3_server.new_bucket()).check_writable()  # an existing bucket passes


def test_s3_bucket_in_another_region_is_a_permanent_error_naming_bucket_and_region(
    s3_server: S3TestServer, s3_bucket: str
) -> None:
    """HeadBucket answers a bare 301 (PermanentRedirect) with the bucket's region in a header."""
    redirect = Rule(
        "HEAD", r"^$", status=301, code="PermanentRedirect", headers=(("x-amz-bucket-region", "eu-west-3"),)
    )
    with S3FaultProxy(s3_server.endpoint_url) as proxy, proxy.failing(redirect):
        environment = {
            "CASTAI_API_URL": "sandbox",
            "S3_BUCKET": s3_bucket,
            "S3_ENDPOINT_URL": proxy.url,
            "S3_ACCESS_KEY_ID": "AKIATESTING",
            "S3_SECRET_ACCESS_KEY": "not-shown",
            "S3_REGION": "us-east-1",
        }
        store = object_store_from_settings(load_settings(environment))
        with pytest.raises(ObjectStoreError) as info:
            store.check_writable()
        unset = object_store_from_settings(load_settings({**environment, "S3_REGION": ""}))
        with pytest.raises(ObjectStoreError) as unset_info:
            unset.check_writable()
    # botocore's region redirector asks once more in the named region; no retry loop beyond that.
    assert redirect.matched <= 4
    assert info.value.permanent and unset_info.value.permanent
    message = str(info.value)
    assert f"S3 bucket {s3_bucket} is in region eu-west-3" in message and "S3_REGION=us-east-1" in message
    assert "set S3_REGION=eu-west-3" in message and "not-shown" not in message
    assert "S3_REGION is unset" in str(unset_info.value)
