"""Where data set files live and how they arrive: the data directory a data set is given, the
per-user cache for the ones that have none, and md5-checked downloads that never leave a partial
or corrupt file behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from hetconv.errors import ConfigError, param
from search.store.files import write_atomic

_DOWNLOAD_TIMEOUT_S = 20


def data_root(name: str, data_dir: str | Path | None) -> Path:
    """``data_dir`` as a path, which may not exist yet; none given, or a file, is an error."""
    if data_dir is None:
        raise ConfigError(f"dataset {name!r} needs a data directory; pass one "
                          f"({param('data_dir')})")
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data directory {root} is a file; pass the directory that holds "
                          f"the {name} data")
    return root


def existing_dir(name: str, data_dir: str | Path | None) -> Path:
    """:func:`data_root`, which must exist already: an error that says what to put there."""
    root = data_root(name, data_dir)
    if not root.is_dir():
        holds = ("train/<class>/*.png (or .jpg) inside" if name == "imagefolder"
                 else f"the {name} files (or room to download them) inside")
        raise ConfigError(f"data directory {root} does not exist; create it with {holds}, "
                          f"or fix the path")
    return root


def cache_root() -> Path:
    """Per-user cache for downloads that have no data directory (XDG, else ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hetnas"


def download_file(url: str, target: Path, md5: str, explain: Callable[[str], str]) -> None:
    """Fetch ``url`` to ``target``, creating its folder: never a partial or corrupt file there.

    The bytes go to a temporary file beside ``target``, renamed into place only once their md5
    matches, so concurrent loaders see the whole file or none. ``explain(problem)`` words the
    error when the download fails.
    """
    def fetch(part: Path) -> None:
        with part.open("wb") as out, \
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        digest = file_md5(part)
        if digest != md5:
            raise ConfigError(f"download of {url} was corrupt (md5 {digest}, expected {md5}); "
                              f"try again, or fetch it another way and put it in {target.parent}")

    try:
        write_atomic(target, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise ConfigError(explain(f"the download failed ({error})")) from None


def file_md5(path: Path) -> str:
    """The md5 of a file, read in blocks: what vouches for a downloaded file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
