"""URLs fit to print or record: credentials and tokens redacted, the originals kept in this process's memory only."""

from __future__ import annotations

import re
from typing import Any

_unredacted: dict[str, str] = {}  # redacted URL -> the URL as given; this process's memory only, never written
_stores: dict[str, str] = {}  # the same for run stores' roots: a run's URL under one is restored by its prefix


def is_url(root: Any) -> bool:
    return "://" in str(root)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_CHAIN = re.compile(r"::(?=[A-Za-z][A-Za-z0-9+.-]*(?:::|://|$))")  # fsspec chains (simplecache::s3://...); not IPv6's [::1]
_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")  # a URL within a sentence: up to a space or a quote


def redact_url(url: str) -> str:
    """A URL fit to print or record: only its scheme, host, port and path are kept; anything else is ``<redacted>``.

    An allow-list: user and password (``<redacted>@host``), the query (``?<redacted>``: a presigned
    link's signature), the fragment (``#<redacted>``: ``#access_token=...``) and ``;`` parameters of a
    path segment (``;<redacted>``: ``;token=...``), wherever present, are replaced. Each part of a
    chained fsspec URL (``simplecache::s3://...``) is redacted; a local path, or a URL with nothing
    but those four parts, is returned as given. Text that does not start with a URL has each URL in
    it redacted (``redact_text``).
    """
    url = str(url)
    if "://" not in url:  # a local path
        return url
    chained = _CHAIN.split(url)
    if len(chained) > 1:
        return "::".join(redact_url(part) for part in chained)
    scheme = _SCHEME.match(url)
    if scheme is None:
        return redact_text(url)
    rest = url[scheme.end() :]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:  # user:password@host:port
        authority = "<redacted>@" + authority.rsplit("@", 1)[1]
    tail, hashed, fragment = tail.partition("#")
    path, asked, query = tail.partition("?")
    path = re.sub(r";[^/]+", ";<redacted>", path)  # parameters of any segment: /a;token=x/b
    return scheme.group(0) + authority + path + (asked + ("<redacted>" if query else "")) + (hashed + ("<redacted>" if fragment else ""))


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted (``redact_url``)."""
    return _IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text)) if "://" in str(text) else str(text)


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
