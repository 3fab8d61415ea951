"""The one listen-address parser: what the config accepts, and port 0 only where a caller asks for it."""

from __future__ import annotations

import pytest

from exporter.listen_address import ListenAddress, parse_listen_address

HINT = "expected HOST:PORT, e.g. 0.0.0.0:10078, :10078 or [::1]:10078"
V6HINT = f"{HINT}; IPv6 addresses go in brackets"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:10078", ("0.0.0.0", 10078)),
        ("localhost:9100", ("localhost", 9100)),
        ("exporter.example.:1", ("exporter.example.", 1)),
        ("[::1]:9100", ("::1", 9100)),
        (":9100", (None, 9100)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
    ],
)
def test_parses(address: str, expected: tuple[str | None, int]) -> None:
    parsed = parse_listen_address(address)
    assert parsed == expected
    assert parse_listen_address(address, allow_port_zero=True) == parsed
    assert (parsed.host, parsed.port) == expected


@pytest.mark.parametrize(("address", "expected"), [("[::]:0", ListenAddress("::", 0)), (":0", ListenAddress(None, 0))])
def test_port_zero_only_when_allowed(address: str, expected: ListenAddress) -> None:
    assert parse_listen_address(address, allow_port_zero=True) == expected
    with pytest.raises(ValueError) as info:
        parse_listen_address(address)
    assert str(info.value) == f"invalid listen address {address!r}: invalid port '0' (use 1-65535)"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", f"invalid listen address '': no port ({HINT})"),
        ("9100", f"invalid listen address '9100': no port ({HINT})"),
        ("[::1:9100", f"invalid listen address '[::1:9100': no port ({HINT})"),
        ("host:", "invalid listen address 'host:': invalid port '' (use 0-65535)"),
        ("host:http", "invalid listen address 'host:http': invalid port 'http' (use 0-65535)"),
        ("host:70000", "invalid listen address 'host:70000': invalid port '70000' (use 0-65535)"),
        ("::1:9100", f"invalid listen address '::1:9100': invalid host '::1' ({V6HINT})"),
        ("[::g]:9100", f"invalid listen address '[::g]:9100': invalid host '::g' ({V6HINT})"),
        ("999.0.0.1:9100", f"invalid listen address '999.0.0.1:9100': invalid host '999.0.0.1' ({HINT})"),
        ("http://x:80", f"invalid listen address 'http://x:80': invalid host 'http://x' ({V6HINT})"),
    ],
)
def test_rejects_with_a_clear_message(address: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen_address(address, allow_port_zero=True)
    assert str(info.value) == message
