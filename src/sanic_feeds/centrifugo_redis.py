"""Centrifugo's Redis settings (``engine.redis``, ``broker.redis``) as one broker URL.

Centrifugo names the server (``address``, or ``cluster_address`` for a Redis Cluster), the
credentials (``user``, ``password``), the database (``db``) and TLS (a ``tls`` object) apart;
sanic-feeds takes them all in its broker URL: ``redis://user:password@host:port/db``,
``rediss://`` with TLS, ``redis-cluster://`` / ``rediss-cluster://`` for a cluster, the TLS
settings in the query (see ``tls_settings.py``). Pure: it reads the document, nothing else.

Centrifugo's PEM values may be PEM text, base64 or a file path; only file paths are taken here
(the settings go into a URL), and PEM text or base64 is refused with a sentence saying so.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from .config_values import SettingsBuilder, as_bool, as_int, as_str, shown

__all__ = ["redis_url"]

TLS = frozenset(
    {
        "enabled",
        "cert_pem",
        "key_pem",
        "server_ca_pem",
        "client_ca_pem",
        "insecure_skip_verify",
        "server_name",
        "cert_pem_file",
        "key_pem_file",
        "server_ca_pem_file",
        "client_ca_pem_file",
    }
)
"""Centrifugo's TLS object (``*_file`` as some v6 releases spell the file forms)."""

_FILES = {"server_ca_pem": "ssl_ca_certs", "cert_pem": "ssl_certfile", "key_pem": "ssl_keyfile"}
"""Centrifugo's TLS files -> the query settings that name them."""


def redis_url(out: SettingsBuilder, section: dict[str, object], where: str) -> str:
    """The broker URL ``section`` (a checked ``<where>.redis`` object) describes."""
    tls = _tls(out, section.get("tls"), f"{where}.tls")
    cluster = section.get("cluster_address")
    if cluster is not None:
        hosts = _hosts(out, cluster, f"{where}.cluster_address")
        if "address" in section:
            raise out.error(f"{where}.cluster_address", "give address or cluster_address, not both")
        if "db" in section:
            raise out.error(f"{where}.db", "a Redis Cluster has one database: no db")
        scheme, rest, path = "rediss-cluster" if tls is not None else "redis-cluster", hosts, ""
    else:
        scheme, rest, path = _address(out, section.get("address", "127.0.0.1:6379"), where)
        if tls is not None and scheme == "redis":
            scheme = "rediss"
        if "db" in section:
            try:
                path = f"/{as_int(section['db'])}"
            except ValueError as exc:
                raise out.error(f"{where}.db", str(exc)) from None
    userinfo = _credentials(out, section, where)
    if userinfo and "@" in rest:
        raise out.error(f"{where}.password", "the address has credentials of its own: give one")
    query = f"?{urlencode(tls)}" if tls else ""
    return f"{scheme}://{userinfo}{rest}{path}{query}"


def _address(out: SettingsBuilder, value: object, where: str) -> tuple[str, str, str]:
    """``host:port`` or a ``redis://``/``rediss://`` URL -> (scheme, netloc, path and query)."""
    key = f"{where}.address"
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        raise out.error(key, "several addresses (Redis sharding) are not supported: give one")
    if not isinstance(value, str):
        raise out.error(key, f"expected a Redis address, got {shown(value)}")
    if value.startswith(("redis+sentinel://", "redis+cluster://")):
        raise out.error(
            key, "Redis Sentinel is not supported; for a Redis Cluster give cluster_address"
        )
    if "://" not in value:
        return "redis", value, ""
    scheme, _, rest = value.partition("://")
    netloc, slash, tail = rest.partition("/")
    return scheme, netloc, slash + tail


def _hosts(out: SettingsBuilder, value: object, key: str) -> str:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(h, str) for h in value):
        raise out.error(key, f"expected a list of HOST:PORT, got {shown(value)}")
    return ",".join(str(host) for host in value)


def _credentials(out: SettingsBuilder, section: dict[str, object], where: str) -> str:
    given: dict[str, str] = {}
    for name, what in (("user", "a user name"), ("password", "a password")):
        try:
            given[name] = as_str(section.get(name, ""), what)
        except ValueError as exc:
            raise out.error(f"{where}.{name}", str(exc)) from None
    user, password = given["user"], given["password"]
    if not (user or password):
        return ""
    return f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else f"{user}@"


def _tls(out: SettingsBuilder, value: object, key: str) -> dict[str, str] | None:
    """The query settings of an enabled ``tls`` object; None when TLS is off."""
    if value is None:
        return None
    section = out.section(key, value, TLS)
    try:
        if not as_bool(section.get("enabled", False)):
            return None
    except ValueError as exc:
        raise out.error(f"{key}.enabled", str(exc)) from None
    query: dict[str, str] = {}
    for name, setting in _FILES.items():
        spellings = [spelled for spelled in (name, f"{name}_file") if spelled in section]
        if len(spellings) == 2:
            raise out.error(f"{key}.{name}_file", f"{name} is given too: give one of the two")
        for spelled in spellings:
            query[setting] = _pem_file(out, section[spelled], f"{key}.{spelled}")
    try:
        if as_bool(section.get("insecure_skip_verify", False)):
            query["ssl_cert_reqs"] = "none"
    except ValueError as exc:
        raise out.error(f"{key}.insecure_skip_verify", str(exc)) from None
    for name in ("server_name", "client_ca_pem", "client_ca_pem_file"):
        if name in section:
            out.skip(f"{key}.{name}", section[name])  # a server's setting, or not ours
    return query


def _pem_file(out: SettingsBuilder, value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise out.error(key, f"expected a file path, got {shown(value)}")
    if "-----BEGIN" in value or value.startswith("LS0tLS1"):  # PEM text, or base64 of it
        raise out.error(key, "give the path of a PEM file (PEM text or base64 is not taken here)")
    return value
