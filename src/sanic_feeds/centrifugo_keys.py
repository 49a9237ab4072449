"""The keys of a Centrifugo v6 configuration file, as its documentation lists them.

A Centrifugo file is accepted as it is: what we implement is mapped onto our settings, what we
do not is named in one warning. To tell a Centrifugo option we do not implement from a typo
(which must stop the start), we need the documented names; they are here, and nothing else is.
Read from centrifugal.dev (``docs/server/configuration.md``, ``channels.md``,
``authentication.md``, ``engines.md``, ``server_api.md`` and the PRO chapters). Data only.
"""

from __future__ import annotations

SECTIONS = frozenset(
    {
        # docs/server/configuration.md
        "http_server",
        "log",
        "engine",
        "broker",
        "presence_manager",
        "http_api",
        "grpc_api",
        "client",
        "channel",
        "rpc",
        "websocket",
        "sse",
        "http_stream",
        "webtransport",
        "uni_websocket",
        "uni_sse",
        "uni_http_stream",
        "uni_grpc",
        "emulation",
        "admin",
        "debug",
        "health",
        "init",
        "prometheus",
        "swagger",
        "proxies",
        "consumers",
        "opentelemetry",
        "graphite",
        "shutdown",
        "pid_file",
        "usage_stats",
        "unified_proxy",
        "map_broker",
        "controller",
        # Centrifugo PRO (docs/pro/*.md)
        "brokers",
        "presence_managers",
        "map_brokers",
        "database",
        "singleflight",
        "sentry",
        "server_tags_filter",
        "schemas",
        "shared_poll",
        "shared_poll_relay",
        "clickhouse_analytics",
        "user_status",
        "push_notifications",
    }
)
"""Every documented top-level key."""

HTTP_SERVER = frozenset(
    {
        "port",
        "address",
        "tls",
        "tls_autocert",
        "tls_external",
        "internal_port",
        "internal_address",
        "internal_tls",
        "http3",
        "h2c_external",
    }
)
LOG = frozenset({"level", "file"})
HTTP_API = frozenset({"key", "insecure", "disabled", "handler_prefix", "error_mode"})
ENGINE = frozenset({"type", "redis"})
ENGINE_REDIS = frozenset(
    {
        "address",
        "prefix",
        "force_resp2",
        "history_use_lists",
        "presence_ttl",
        "presence_hash_field_ttl",
        "presence_user_mapping",
        "tls",
        # The Redis connection options common to Centrifugo's Redis clients (documented under
        # consumers[].redis_stream).
        "cluster_address",
        "sentinel_address",
        "sentinel_tls",
        "connect_timeout",
        "io_timeout",
        "db",
        "user",
        "password",
        "sentinel_user",
        "sentinel_password",
        "sentinel_master_name",
        "sentinel_client_name",
        "client_name",
    }
)
BROKER = frozenset({"enabled", "type", "redis", "nats", "postgres"})
BROKER_NATS = frozenset(
    {"url", "prefix", "dial_timeout", "write_timeout", "tls", "allow_wildcards", "raw_mode"}
)
CLIENT = frozenset(
    {
        "allowed_origins",
        "token",
        "subscription_token",
        "proxy",
        "ping_interval",
        "pong_timeout",
        "queue_max_size",
        "history_max_publication_limit",
        "recovery_max_publication_limit",
        "channel_limit",
        "user_connection_limit",
        "connection_limit",
        "connection_rate_limit",
        "concurrency",
        "stale_close_delay",
        "user_id_http_header",
        "connect_include_server_time",
        "allow_anonymous_connect_without_token",
        "disallow_anonymous_connection_tokens",
        "subscribe_to_user_personal_channel",
        "insecure",
        "insecure_skip_token_signature_verify",
    }
)
CLIENT_TOKEN = frozenset(
    {
        "hmac_secret_key",
        "rsa_public_key",
        "ecdsa_public_key",
        "audience",
        "issuer",
        "audience_regex",
        "issuer_regex",
        "jwks_public_endpoint",
        "user_id_claim",
        "hmac_previous_secret_key",
        "hmac_previous_secret_key_valid_until",
        "insecure_skip_jwks_endpoint_safety_check",
    }
)
CHANNEL = frozenset(
    {
        "without_namespace",
        "namespaces",
        "history_meta_ttl",
        "proxy",
        "max_length",
        "namespace_boundary",
        "private_prefix",
        "publication_data_format",
    }
)
CHANNEL_OPTIONS = frozenset(
    {
        # docs/server/channels.md, "Channel options"
        "presence",
        "join_leave",
        "force_push_join_leave",
        "history_size",
        "history_ttl",
        "history_meta_ttl",
        "force_positioning",
        "allow_positioning",
        "force_recovery",
        "allow_recovery",
        "force_recovery_mode",
        "auto_cache_recover",
        "allow_subscribe_for_client",
        "allow_subscribe_for_anonymous",
        "allow_publish_for_subscriber",
        "allow_publish_for_client",
        "allow_publish_for_anonymous",
        "allow_history_for_subscriber",
        "allow_history_for_client",
        "allow_history_for_anonymous",
        "allow_presence_for_subscriber",
        "allow_presence_for_client",
        "allow_presence_for_anonymous",
        "allow_user_limited_channels",
        "channel_regex",
        "delta_publish",
        "allowed_delta_types",
        "publication_data_format",
        "allow_tags_filter",
        "subscribe_proxy_enabled",
        "subscribe_proxy_name",
        "publish_proxy_enabled",
        "publish_proxy_name",
        "sub_refresh_proxy_enabled",
        "sub_refresh_proxy_name",
        "subscribe_stream_proxy_enabled",
        "subscribe_stream_proxy_name",
        "subscribe_stream_proxy_bidirectional",
        # Centrifugo PRO
        "cache_empty_proxy_enabled",
        "cache_empty_proxy_name",
        "state_proxy_enabled",
        "state_events",
        "shared_position_sync",
        "subscribe_cel",
        "publish_cel",
        "history_cel",
        "presence_cel",
        "batch_max_size",
        "batch_max_delay",
        "batch_flush_latest",
        "allow_channel_compaction",
        "broker_name",  # docs/pro/namespace_engines.md
        "presence_manager_name",
    }
)
"""The options a namespace (or ``channel.without_namespace``) may set in Centrifugo."""
PROXY = frozenset(
    {
        # docs/server/proxy.md, "Proxy configuration object"
        "enabled",
        "endpoint",
        "timeout",
        "http_headers",
        "emulated_headers",
        "grpc_metadata",
        "include_connection_meta",
        "http",
        "grpc",
        "binary_encoding",
        "name",
    }
)
"""The options of one proxy (``client.proxy.connect``, ``channel.proxy.publish``, ...)."""
CLIENT_PROXY = frozenset({"connect", "refresh"})
CHANNEL_PROXY = frozenset(
    {"subscribe", "publish", "sub_refresh", "subscribe_stream", "state", "cache_empty"}
)
RPC = frozenset({"proxy", "without_namespace", "namespaces", "namespace_boundary", "ping"})
RPC_NAMESPACE = frozenset({"name", "proxy_enabled", "proxy_name"})
