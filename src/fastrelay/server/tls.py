"""TLS for the main port: ``wss://`` and ``https://`` from a PEM certificate and key."""

from __future__ import annotations

import ssl

from ..errors import ConfigError

__all__ = ["server_context"]


def server_context(cert: str, key: str, passphrase: str | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer, HTTP/1.1 over ALPN, the certificate chain loaded.

    Raises:
        ConfigError: a file is missing or unreadable, not PEM, the key does not match the
            certificate, or the passphrase is wrong. The message never contains the passphrase.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        # A callable, not the string: with no passphrase and an encrypted key, OpenSSL would
        # otherwise prompt on the terminal.
        context.load_cert_chain(cert, key, password=lambda: passphrase or "")
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: {exc.filename} does not exist") from None
    except PermissionError as exc:
        raise ConfigError(f"TLS: {exc.filename} is not readable") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(
            f"TLS: cannot load certificate {cert} with key {key} ({reason}); check that both are"
            " PEM, that the key matches the certificate and the passphrase (RELAY_SSL_PASSPHRASE)"
        ) from None
    return context
