from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from plinth.errors import Conflict, InvalidArgument, NotFound, Unavailable
from plinth.store.artifacts import ArtifactInfo, ArtifactStore, safe_relpath

DATA = bytes(range(256)) * 64


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "artifacts")
    bucket: str = request.getfixturevalue("s3_bucket")
    return f"{bucket}/artifacts"


@pytest.fixture
def store(root_uri: str) -> ArtifactStore:
    return ArtifactStore(root_uri)


def make_tree(base: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)


class TestArtifactStoreContract:
    def test_bytes_round_trip(self, store: ArtifactStore) -> None:
        store.write_bytes("models/m1/model.bin", DATA)
        assert store.read_bytes("models/m1/model.bin") == DATA
        store.write_bytes("models/m1/model.bin", b"short")
        assert store.read_bytes("models//m1/./model.bin") == b"short"

    def test_non_ascii_names_round_trip(self, store: ArtifactStore) -> None:
        store.write_bytes("modèle/données 1.bin", b"u")
        assert store.read_bytes("modèle/données 1.bin") == b"u"
        assert store.list("modèle") == [ArtifactInfo("modèle/données 1.bin", False, 1)]

    def test_empty_file_round_trip(self, store: ArtifactStore) -> None:
        store.write_bytes("empty", b"")
        assert store.read_bytes("empty") == b""
        assert store.list() == [ArtifactInfo("empty", False, 0)]

    def test_put_file_round_trip(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = tmp_path / "source.bin"
        source.write_bytes(DATA)
        store.put_file(source, "run/model.bin")
        store.put_file(str(source), "run/copy.bin")
        assert store.read_bytes("run/model.bin") == DATA
        assert store.read_bytes("run/copy.bin") == DATA

    def test_put_file_refuses_a_missing_source(self, store: ArtifactStore, tmp_path: Path) -> None:
        with pytest.raises(InvalidArgument, match=r"nope\.bin"):
            store.put_file(tmp_path / "nope.bin", "x.bin")
        assert not store.exists("x.bin")

    def test_put_dir_round_trip(self, store: ArtifactStore, tmp_path: Path) -> None:
        files = {"b.txt": b"b", "a.txt": b"a", "sub/c.bin": DATA, "sub/deeper/d.txt": b"d"}
        make_tree(tmp_path / "src", files)
        (tmp_path / "src" / "empty").mkdir()
        stored = store.put_dir(tmp_path / "src", "run1/out")
        assert stored == [f"run1/out/{rel}" for rel in sorted(files)]
        for rel, data in files.items():
            assert store.read_bytes(f"run1/out/{rel}") == data

    def test_put_dir_refuses_a_file(self, store: ArtifactStore, tmp_path: Path) -> None:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(InvalidArgument, match="not a directory"):
            store.put_dir(tmp_path / "f", "out")

    def test_streaming_write_and_read(self, store: ArtifactStore) -> None:
        chunks = [bytes([i]) * 300_000 for i in range(5)]
        with store.open_write("big/blob") as f:
            for chunk in chunks:
                f.write(chunk)
        with store.open_read("big/blob") as f:
            assert f.read(300_000) == chunks[0]
            assert f.read() == b"".join(chunks[1:])

    def test_a_write_is_invisible_until_closed(self, store: ArtifactStore) -> None:
        f = store.open_write("dir/m.bin")
        f.write(DATA)
        f.flush()
        assert not store.exists("dir/m.bin")
        assert store.list("dir") == []
        f.close()
        assert store.read_bytes("dir/m.bin") == DATA

    def test_a_failed_write_publishes_nothing(self, store: ArtifactStore) -> None:
        store.write_bytes("m.bin", b"old")
        for path in ("m.bin", "new.bin"):
            with pytest.raises(RuntimeError, match="boom"), store.open_write(path) as f:
                f.write(DATA)
                raise RuntimeError("boom")
        assert store.read_bytes("m.bin") == b"old"
        assert not store.exists("new.bin")
        assert store.list() == [ArtifactInfo("m.bin", False, 3)]

    def test_a_check_that_refuses_at_close_publishes_nothing(self, store: ArtifactStore) -> None:
        store.write_bytes("pkg/model.bin", b"registered")

        def refuse() -> None:
            raise Conflict("pkg became read-only")

        writer = store.open_write("pkg/model.bin", refuse)
        writer.write(DATA)
        with pytest.raises(Conflict, match="read-only"):
            writer.close()
        fresh = store.open_write("pkg/new.bin", refuse)
        fresh.write(b"x")
        with pytest.raises(Conflict):
            fresh.close()
        assert store.read_bytes("pkg/model.bin") == b"registered"
        assert [i.path for i in store.list("pkg")] == ["pkg/model.bin"]

    def test_list_gives_direct_children_sorted(self, store: ArtifactStore) -> None:
        for path in ("x/b.txt", "x/a.txt", "x/sub/c.txt", "y.txt"):
            store.write_bytes(path, path.encode())
        assert store.list() == [ArtifactInfo("x", True, None), ArtifactInfo("y.txt", False, 5)]
        assert store.list(".") == store.list()
        assert store.list("x/") == [
            ArtifactInfo("x/a.txt", False, 7),
            ArtifactInfo("x/b.txt", False, 7),
            ArtifactInfo("x/sub", True, None),
        ]
        assert store.list("x/sub") == [ArtifactInfo("x/sub/c.txt", False, 11)]

    def test_list_of_a_missing_prefix_or_a_file_is_empty(self, store: ArtifactStore) -> None:
        assert store.list() == []
        store.write_bytes("x/a.txt", b"a")
        assert store.list("nothing/here") == []
        assert store.list("x/a.txt") == []

    def test_missing_artifacts_raise_not_found(self, store: ArtifactStore) -> None:
        store.write_bytes("folder/file", b"x")
        for path in ("nope.bin", "folder/nope", "folder"):
            with pytest.raises(NotFound, match=f"'{path}'"):
                store.read_bytes(path)
            with pytest.raises(NotFound, match=f"'{path}'"):
                store.open_read(path)

    def test_exists(self, store: ArtifactStore) -> None:
        store.write_bytes("a/b/c.txt", b"c")
        assert store.exists("a/b/c.txt")
        assert store.exists("a/b")
        assert not store.exists("a/b/c")
        assert not store.exists("a/b/c.txt/d")

    def test_delete_is_recursive_and_exact(self, store: ArtifactStore) -> None:
        for path in ("x/a.txt", "x/sub/b.txt", "xy.txt", "x2/c.txt"):
            store.write_bytes(path, b"1")
        store.delete("x")
        assert not store.exists("x/a.txt")
        assert not store.exists("x/sub/b.txt")
        assert [i.path for i in store.list()] == ["x2", "xy.txt"]
        store.delete("x")
        store.delete("never/was")

    def test_delete_of_a_file_leaves_no_empty_folders(self, store: ArtifactStore) -> None:
        store.write_bytes("a/b/c.txt", b"c")
        store.delete("a/b/c.txt")
        assert store.list() == []

    def test_uri(self, store: ArtifactStore, root_uri: str) -> None:
        expected_root = root_uri if "://" in root_uri else Path(root_uri).as_uri()
        assert store.uri() == expected_root
        assert store.uri("a//b/./c.txt") == f"{expected_root}/a/b/c.txt"

    @pytest.mark.parametrize("bad", ["../escape", "a/../../escape", "/etc/passwd", "a\\b", ""])
    def test_every_method_refuses_bad_paths(
        self, store: ArtifactStore, tmp_path: Path, bad: str
    ) -> None:
        (tmp_path / "f").write_bytes(b"x")
        calls = [
            lambda: store.write_bytes(bad, b"x"),
            lambda: store.open_write(bad),
            lambda: store.put_file(tmp_path / "f", bad),
            lambda: store.put_dir(tmp_path, bad),
            lambda: store.read_bytes(bad),
            lambda: store.open_read(bad),
            lambda: store.exists(bad),
            lambda: store.delete(bad),
        ]
        if bad:
            calls += [lambda: store.list(bad), lambda: store.uri(bad)]
        for call in calls:
            with pytest.raises(InvalidArgument):
                call()
        assert not (tmp_path / "escape").exists()


def test_local_root_may_be_a_file_uri(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path.as_uri())
    store.write_bytes("a/b.txt", b"hi")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"hi"
    assert store.uri("a/b.txt") == (tmp_path / "a" / "b.txt").as_uri()


def test_local_file_and_folder_name_clash_is_a_conflict(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    store.write_bytes("a", b"file")
    with pytest.raises(Conflict, match="'a/b'"):
        store.write_bytes("a/b", b"x")
    store.delete("a/b")
    assert store.read_bytes("a") == b"file"
    store.write_bytes("d/x", b"x")
    with pytest.raises(Conflict, match="'d'"):
        store.open_write("d")
    late = store.open_write("late")
    late.write(b"content")
    store.write_bytes("late/x", b"x")  # a folder appears where the file was to go
    with pytest.raises(Conflict, match="'late'"):
        late.close()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".plinth-tmp")]


@pytest.mark.integration
def test_a_missing_bucket_is_unavailable_for_writes(s3_endpoint: str) -> None:
    store = ArtifactStore(f"s3://plinth-missing-{uuid.uuid4().hex[:12]}/root")
    with pytest.raises(Unavailable, match="plinth-missing-"):
        store.write_bytes("m.bin", b"x")
    with pytest.raises(NotFound):
        store.read_bytes("m.bin")
    assert store.list() == []


def test_unreachable_s3_raises_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{s.getsockname()[1]}"},
            "config_kwargs": {"retries": {"max_attempts": 1}},
        }
        store = ArtifactStore("s3://bucket/root", storage_options=options)
        with pytest.raises(Unavailable, match=r"m\.bin"):
            store.read_bytes("m.bin")
        with pytest.raises(Unavailable, match="s3://bucket/root"):
            store.write_bytes("m.bin", b"x")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a/./b//c", "a/b/c"),
        ("./a", "a"),
        ("a/b/", "a/b"),
        ("..a/b..c/.d", "..a/b..c/.d"),
        ("modèle/数据.bin", "modèle/数据.bin"),
        ("/".join(["x" * 200] * 5), "/".join(["x" * 200] * 5)),
        ("é" * 100, "é" * 100),
    ],
)
def test_safe_relpath_normalises(raw: str, clean: str) -> None:
    assert safe_relpath(raw) == clean


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("//host/share", "absolute"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a/\ud800", "surrogate"),
        ("x" * 1025, "longer than 1024"),
        ("a/" + "x" * 201, "201 bytes; the most is 200"),
        ("é" * 101, "202 bytes"),
        ("", "empty"),
        (".", "root"),
        ("./", "root"),
        ("model/.x.plinth-tmp", "writes in flight"),
    ],
)
def test_safe_relpath_refuses(bad: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as info:
        safe_relpath(bad)
    assert repr(bad)[:40] in info.value.message


def test_safe_relpath_allows_the_root_only_when_asked() -> None:
    assert safe_relpath("", allow_root=True) == ""
    assert safe_relpath(".", allow_root=True) == ""
    assert safe_relpath("a/b", allow_root=True) == "a/b"
    for bad in ("/", "..", "../a"):
        with pytest.raises(InvalidArgument):
            safe_relpath(bad, allow_root=True)


def test_a_discarded_write_keeps_the_previous_content(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "root"))
    store.write_bytes("a/file.bin", b"good")
    writer = store.open_write("a/file.bin")
    writer.write(b"TRUNC")
    writer.discard()  # type: ignore[attr-defined]  # what the server does when an upload breaks off
    assert store.read_bytes("a/file.bin") == b"good"


@pytest.fixture
def linked_store(tmp_path: Path) -> ArtifactStore:
    """A local store whose root holds a link to a file and a link to a folder outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "run" / "own.txt").write_bytes(b"own")
    (root / "run" / "file-link").symlink_to(outside / "secret.txt")
    (root / "run" / "dir-link").symlink_to(outside, target_is_directory=True)
    return ArtifactStore(str(root))


@pytest.mark.parametrize("path", ["run/file-link", "run/dir-link/secret.txt", "run/dir-link"])
def test_symlinks_are_never_followed(
    linked_store: ArtifactStore, tmp_path: Path, path: str
) -> None:
    outside = tmp_path / "outside"
    calls = {
        "read": lambda: linked_store.read_bytes(path),
        "open_read": lambda: linked_store.open_read(path),
        "write": lambda: linked_store.write_bytes(path, b"overwritten"),
        "write below": lambda: linked_store.write_bytes(f"{path}/new.txt", b"new"),
        "put_file": lambda: linked_store.put_file(tmp_path / "root" / "run" / "own.txt", path),
        "list": lambda: linked_store.list(path),
        "exists": lambda: linked_store.exists(path),
        "delete": lambda: linked_store.delete(path),
    }
    for what, call in calls.items():
        with pytest.raises(InvalidArgument, match="symbolic link"):
            call()
            pytest.fail(f"{what} went through the link {path!r}")
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (tmp_path / "root" / "run" / "file-link").is_symlink()


def test_listings_leave_links_out(linked_store: ArtifactStore, tmp_path: Path) -> None:
    assert linked_store.list("run") == [ArtifactInfo("run/own.txt", False, 3)]
    assert linked_store.read_bytes("run/own.txt") == b"own"
    linked_store.delete("run")  # removes the links themselves, never what they point to
    assert linked_store.list() == []
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == b"secret"


def test_a_link_swapped_in_after_the_check_is_not_read(tmp_path: Path) -> None:
    from plinth.store.artifacts import _open_local_read

    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidArgument, match="symbolic link"):
        _open_local_read(str(tmp_path / "link"), "link")
