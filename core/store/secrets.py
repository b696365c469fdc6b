"""URLs fit to print or record: credentials and tokens redacted, the originals kept in this process's memory only."""

from __future__ import annotations

import re
from typing import Any

_unredacted: dict[str, str] = {}  # redacted URL -> the URL as given; this process's memory only, never written
_stores: dict[str, str] = {}  # the same for run stores' roots: a run's URL under one is restored by its prefix


def is_url(root: Any) -> bool:
    return "://" in str(root)


def redact_url(url: str) -> str:
    """A URL fit to print or record: user:password and the query string (tokens of presigned links) replaced by ``<redacted>``.

    Each part of a chained fsspec URL (``simplecache::s3://...``) is redacted; a URL without
    either is returned as given.
    """
    import urllib.parse

    url = str(url)
    if "://" not in url:  # a local path
        return url
    chained = re.split(r"::(?=[A-Za-z][A-Za-z0-9+.-]*(?:::|://|$))", url)  # fsspec chains; not IPv6's [::1]
    if len(chained) > 1:
        return "::".join(redact_url(part) for part in chained)
    try:
        parts = urllib.parse.urlsplit(url)
        secret = parts.username or parts.password or parts.query
    except ValueError:  # not a URL urllib reads (a bad port, brackets): cut by pattern
        return re.sub(r"\?.*$", "?<redacted>", re.sub(r"^([^:/]+://)[^/]*@", r"\1<redacted>@", url))
    if not secret:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = "<redacted>@" + netloc if "@" in parts.netloc else netloc
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "<redacted>" if parts.query else "", parts.fragment))


def redact_secrets(obj: Any) -> Any:
    """``obj`` (a spec, a list, a string) with every URL redacted, the originals remembered by this process only.

    What genforge writes (spec.yaml, markers, logs) holds the redacted form; ``unredact`` gives the
    original back within the process that saw it (a run, a resume given the URL again).
    """
    if isinstance(obj, dict):
        return {k: redact_secrets(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, str) and "://" in obj:
        redacted = redact_url(obj)
        if redacted != obj:
            _unredacted[redacted] = obj
        return redacted
    return obj


def remember_store(url: str) -> None:
    """A run store's root URL, for ``unredact`` to restore the URLs of runs under it."""
    if is_url(url):
        redacted = redact_url(url.rstrip("/"))
        if redacted != url.rstrip("/"):
            _stores[redacted] = url.rstrip("/")


def unredact(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """``obj`` with redacted URLs this process knows restored, and the dotted names of those it does not know."""
    missing: list[str] = []
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k], m = unredact(v, f"{where}.{k}" if where else str(k))
            missing += m
        return out, missing
    if isinstance(obj, list):
        items = [unredact(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [n for _, m in items for n in m]
    if isinstance(obj, str) and "<redacted>" in obj:
        if obj in _unredacted:
            return _unredacted[obj], []
        for redacted, url in _stores.items():  # a run's URL under a store this process knows
            rest = obj[len(redacted.rstrip("/")) :]
            if obj.startswith(redacted.rstrip("/") + "/") and "<redacted>" not in rest:
                return url.rstrip("/") + rest, []
        return obj, [where]
    return obj, []
