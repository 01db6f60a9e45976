"""Model packages: a folder holding the flavor's files and a manifest that lists them.

    folder/
      plinth-model.json   the Manifest: flavor, versions, signature, sha256 of every file
      model/              what the flavor wrote

Every file is checked against its sha256 before a package loads, so a tampered, truncated
or missing file is refused by name instead of being loaded. A package whose flavor would
unpickle (run code chosen by whoever saved it) is refused before anything is unpickled,
unless the caller trusts pickles (``trust_pickle``); a registered version's manifest must
be the one recorded when it was registered.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pydantic

from plinth.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from plinth.registry.flavors import Flavor, flavor_for, flavor_named
from plinth.registry.signature import enforce, infer_signature
from plinth.registry.types import MANIFEST_FILE, Manifest, Signature

MANIFEST = MANIFEST_FILE
MODEL_FOLDER = "model"
#: recorded with every flavor's own requirements: signatures and predictors use them
_ALWAYS = ("numpy", "pandas")
_ADAPTER = pydantic.TypeAdapter(Manifest)


def save_package(
    model: object,
    folder: Path | str,
    *,
    flavor: str | None = None,
    input_example: object = None,
    signature: Signature | None = None,
) -> Manifest:
    """Write ``model`` as a package into ``folder``. The flavor is the one named, else the
    first that handles the model; without a ``signature`` one is inferred from
    ``input_example`` (outputs from the model's predictions on it), else there is none."""
    folder = Path(folder)
    chosen = _choose_flavor(model, flavor)
    if signature is None and input_example is not None:
        signature = _infer(model, chosen, input_example)
    target = folder / MODEL_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target.mkdir()
    except FileExistsError:
        raise AlreadyExists(f"{folder} already holds a model package") from None
    try:
        chosen.save_with_signature(model, target, signature)
        pickled = _pickled(chosen, target)
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise InvalidArgument(
            f"the {chosen.name} flavor could not save the {_qualified_class(model)}: {exc}"
        ) from exc
    manifest = Manifest(
        flavor=chosen.name,
        plinth_version=_plinth_version(),
        python_version=platform.python_version(),
        requirements=_installed(chosen.requirements + _ALWAYS),
        created_at=datetime.now(UTC),
        files={_relative(path, folder): _sha256(path) for path in _files_under(target)},
        signature=signature,
        model_class=_qualified_class(model),
        pickled=pickled,
    )
    _write_manifest(folder, manifest)
    return manifest


def read_manifest(folder: Path | str) -> Manifest:
    path = Path(folder) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no model package at {folder}: {MANIFEST} is missing") from None
    return parse_manifest(raw, str(folder))


def parse_manifest(raw: bytes, where: str) -> Manifest:
    try:
        return _ADAPTER.validate_json(raw)
    except pydantic.ValidationError as exc:
        raise InvalidArgument(
            f"model package at {where} is corrupt: {MANIFEST} is not a valid manifest ({exc.error_count()} errors, first: {exc.errors()[0]['msg']})"
        ) from None


def verify_package(folder: Path | str, manifest: Manifest | None = None) -> Manifest:
    """Check every file the manifest lists against its sha256, and that the package holds
    no other (flavors load files by name: one slipped in beside the listed ones would be
    loaded unchecked). ``manifest`` defaults to the package's own (pass the registry's copy
    to catch an edited manifest too)."""
    folder = Path(folder)
    if manifest is None:
        manifest = read_manifest(folder)
    root = folder.resolve()
    for name, expected in manifest.files.items():
        path = (folder / name).resolve()
        if not path.is_relative_to(root):
            raise InvalidArgument(
                f"model package at {folder} is corrupt: its manifest lists {name!r}, which lies outside the package"
            )
        try:
            actual = _sha256(path)
        except FileNotFoundError:
            raise InvalidArgument(
                f"model package at {folder} is corrupt: file {name!r} is missing"
            ) from None
        if actual != expected:
            raise InvalidArgument(
                f"model package at {folder} is corrupt: file {name!r} was changed or truncated (its sha256 does not match the manifest)"
            )
    listed = set(manifest.files) | {MANIFEST}
    foreign = sorted(
        name for name in (_relative(p, folder) for p in _files_under(folder)) if name not in listed
    )
    if foreign:
        raise InvalidArgument(
            f"model package at {folder} holds files its manifest does not list: "
            f"{', '.join(foreign[:5])}"
        )
    return manifest


def manifest_sha256(folder: Path | str) -> str:
    """The sha256 of a package's manifest file, as a registry records it."""
    path = Path(folder) / MANIFEST
    try:
        return _sha256(path)
    except FileNotFoundError:
        raise NotFound(f"no model package at {folder}: {MANIFEST} is missing") from None


def load_package(
    folder: Path | str,
    *,
    trust_pickle: bool = False,
    recorded: Manifest | None = None,
    recorded_sha256: str | None = None,
    what: str | None = None,
) -> tuple[Manifest, object]:
    """Verify the package, then load its native model with its flavor.

    A registered version passes the manifest the registry recorded (``recorded``, and
    ``recorded_sha256`` of its file when the registry kept it): a package whose manifest
    differs is refused. A pickled package is refused before anything is unpickled unless
    ``trust_pickle``. ``what`` names the package in messages (``models:/churn/3``)."""
    folder = Path(folder)
    what = what or f"the model package at {folder}"
    manifest = _recorded_manifest(folder, recorded, recorded_sha256, what)
    verify_package(folder, manifest)
    flavor = flavor_named(manifest.flavor)
    if not trust_pickle and (manifest.pickled or _pickled(flavor, folder / MODEL_FOLDER)):
        raise PermissionDenied(_pickle_refusal(what, manifest))
    try:
        model = flavor.load(folder / MODEL_FOLDER)
    except Exception as exc:
        needs = ", ".join(f"{name}=={v}" for name, v in manifest.requirements.items())
        raise InvalidArgument(
            f"could not load the {manifest.model_class or 'model'} in {folder} with the {flavor.name} flavor: {exc} (it was saved with Python {manifest.python_version} and {needs})"
        ) from exc
    return manifest, model


def _pickle_refusal(what: str, manifest: Manifest) -> str:
    """Why a pickled package is not loaded, and how to allow it."""
    return (
        f"{what} is a pickled model package ({manifest.flavor} flavor, "
        f"{manifest.model_class or 'unknown class'}): loading it unpickles it, which runs "
        "code chosen by whoever saved and registered it. Load it only if you trust them: "
        "pass trust_pickle=True (--trust-pickle on plinth serve and plinth score), or set "
        "the store's policy PLINTH_TRUST_PICKLE=true"
    )


def _recorded_manifest(
    folder: Path, recorded: Manifest | None, recorded_sha256: str | None, what: str
) -> Manifest:
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no model package at {folder}: {MANIFEST} is missing") from None
    # the bytes hashed are the bytes parsed
    if recorded_sha256 is not None and hashlib.sha256(raw).hexdigest() != recorded_sha256:
        raise PermissionDenied(_swapped(what, folder))
    manifest = parse_manifest(raw, str(folder))
    # versions registered before the file's sha256 was kept: compare the content instead
    if recorded is not None and manifest != recorded:
        raise PermissionDenied(_swapped(what, folder))
    return manifest


def _swapped(what: str, folder: Path) -> str:
    return (
        f"{what}: the package's {MANIFEST} in {folder} is not the manifest recorded when the "
        "version was registered (it was replaced or edited since); the package is not loaded"
    )


def _pickled(flavor: Flavor, folder: Path) -> bool:
    # a flavor that cannot tell (a file it cannot read) counts as unpickling
    try:
        return flavor.pickled(folder)
    except Exception:
        return True


def _choose_flavor(model: object, name: str | None) -> Flavor:
    if name is None:
        return flavor_for(model)
    chosen = flavor_named(name)
    if not chosen.handles(model):
        raise InvalidArgument(f"the {name} flavor cannot save a {_qualified_class(model)}")
    return chosen


def _infer(model: object, flavor: Flavor, example: object) -> Signature:
    inputs = infer_signature(example)
    try:
        outputs = flavor.predict(model, enforce(inputs, example))
    except Exception as exc:
        raise InvalidArgument(
            f"the model failed to predict on its input example, so no signature could be inferred: {exc!r}"
        ) from exc
    return infer_signature(example, outputs)


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    # written last and renamed into place: a package without its manifest is no package
    partial = folder / f".{MANIFEST}.partial"
    partial.write_bytes(_ADAPTER.dump_json(manifest, indent=2))
    os.replace(partial, folder / MANIFEST)


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _sha256(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


@functools.lru_cache(maxsize=64)
def _installed_versions(distributions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Looking a distribution up scans sys.path: once per process is enough.
    found: dict[str, str] = {}
    for name in distributions:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return tuple(found.items())


def _installed(distributions: tuple[str, ...]) -> dict[str, str]:
    return dict(_installed_versions(distributions))


def _plinth_version() -> str:
    import plinth

    return plinth.__version__


def _qualified_class(model: object) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"
