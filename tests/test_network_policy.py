"""workers.sandbox_allow: its grammar and error messages, deny entries winning, wildcards, and the
addresses a worker never reaches unless they are listed literally. Pure: nothing is resolved."""

from __future__ import annotations

import pytest

from orchestrator.network.policy import Endpoint, Kind, Policy, Verdict, endpoint_of_url, parse_entry

API = Endpoint("127.0.0.1", 8000, "the orchestrator's API")


def policy(*entries, always=(), own=()):
    return Policy.parse(list(entries), always=always, own_addresses=lambda: set(own))


@pytest.mark.parametrize(
    "entry, kind, value, port",
    [
        ("api.anthropic.com", Kind.NAME, "api.anthropic.com", None),
        ("GitHub.com.:443", Kind.NAME, "github.com", 443),
        ("*.npmjs.org", Kind.SUBDOMAINS, "npmjs.org", None),
        ("*", Kind.ANY, "*", None),
        ("*:443", Kind.ANY, "*", 443),
        ("203.0.113.5", Kind.ADDRESS, "203.0.113.5", None),
        ("127.0.0.1:4000", Kind.ADDRESS, "127.0.0.1", 4000),
        ("[::1]:8080", Kind.ADDRESS, "::1", 8080),
        ("::1", Kind.ADDRESS, "::1", None),
        ("10.1.0.0/16", Kind.NETWORK, "10.1.0.0/16", None),
        ("fd00::/8", Kind.NETWORK, "fd00::/8", None),
        ("  pypi.org  ", Kind.NAME, "pypi.org", None),
    ],
)
def test_each_form_of_entry_parses(entry, kind, value, port):
    rule = parse_entry(entry)
    assert (rule.kind, rule.value, rule.port, rule.deny) == (kind, value, port, False)
    assert parse_entry("!" + entry.strip()).deny


@pytest.mark.parametrize(
    "entry, message",
    [
        ("*.", '"*.": a wildcard must be "*" or "*.domain" (for example "*.npmjs.org")'),
        ("foo.*", '"foo.*": a wildcard must be "*" or "*.domain"'),
        ("*.*.org", 'a wildcard must be "*" or "*.domain"'),
        ("", '"": an entry cannot be empty (for example "api.anthropic.com")'),
        ("!", '"!": a deny entry needs a destination after "!" (for example "!evil.example.com")'),
        ("https://github.com", 'a destination is a host, not a URL (for example "github.com:443")'),
        ("github.com/org", "a destination is a host or a network, not a URL"),
        ("github.com:0", 'the port must be a number from 1 to 65535 (for example "github.com:443")'),
        ("github.com:65536", "the port must be a number from 1 to 65535"),
        ("github.com:https", "the port must be a number from 1 to 65535"),
        ("bücher.de", "only ASCII host names are taken; write an internationalized name in its xn-- form"),
        ("10.1.0.1/16", 'the network\'s host bits must be zero (for example "10.1.0.0/16")'),
        ("10.1.0.0/16:443", 'a network takes no port (for example "10.1.0.0/16")'),
        ("10.1.0.0/33", "not a valid network"),
        ("[fd00::]/8", 'an IPv6 network is written without brackets (for example "fd00::/8")'),
        ("[github.com]:443", 'an address in brackets must be IPv6 (for example "[::1]:8080")'),
        ("fe80::1::2", "not a valid IPv6 address (one with a port goes in brackets)"),
        ("my host", "not a valid host name"),
        ("10.0.0", "not a valid host name"),
        ("a..b", "not a valid host name"),
    ],
)
def test_an_invalid_entry_is_refused_naming_it_what_is_wrong_and_an_example(entry, message):
    with pytest.raises(ValueError) as raised:
        Policy.parse([entry])
    assert str(raised.value).startswith(f'workers.sandbox_allow: "{entry}": ')
    assert message in str(raised.value)
    assert "(for example " in str(raised.value)


def test_one_string_instead_of_a_list_is_refused():
    with pytest.raises(ValueError, match="must be a list"):
        Policy.parse("github.com")


def test_names_compare_case_insensitively_and_ignore_a_trailing_dot():
    p = policy("API.Anthropic.com", "github.com:443")
    assert p.check_name("api.anthropic.COM.", 443) == Verdict(True, 'allowed by "API.Anthropic.com"')
    assert p.check_name("api.anthropic.com", 1).allowed
    assert p.check_name("GITHUB.com", 443).allowed
    assert p.check_name("github.com", 22) == Verdict(False, "not in workers.sandbox_allow")
    assert p.check_name("gist.github.com", 443).allowed is False


def test_a_wildcard_covers_subdomains_not_the_domain_itself():
    p = policy("*.npmjs.org")
    assert p.check_name("registry.npmjs.org", 443) == Verdict(True, 'allowed by "*.npmjs.org"')
    assert p.check_name("a.b.npmjs.org", 80).allowed
    assert not p.check_name("npmjs.org", 443).allowed
    assert not p.check_name("evilnpmjs.org", 443).allowed
    assert not p.check_name("npmjs.org.evil.com", 443).allowed


def test_star_allows_any_public_host_and_address():
    p = policy("*")
    assert p.check_name("anything.example", 443).allowed
    assert p.check_name("203.0.113.9", 443).allowed
    assert p.check_address("anything.example", 443, "203.0.113.9") == Verdict(True, "a public address")


def test_a_deny_entry_wins_over_every_allow():
    p = policy("*", "*.example.com", "evil.example.com", "!evil.example.com", "!*.bad.org", "!203.0.113.0/24", always=[API])
    assert p.check_name("evil.example.com", 443) == Verdict(False, 'denied by "!evil.example.com"')
    assert p.check_name("x.bad.org", 443) == Verdict(False, 'denied by "!*.bad.org"')
    assert p.check_name("good.example.com", 443).allowed
    # an address a deny network holds, asked by name or by IP
    assert p.check_address("good.example.com", 443, "203.0.113.7") == Verdict(False, 'denied by "!203.0.113.0/24"')
    assert p.check_name("203.0.113.7", 443) == Verdict(False, 'denied by "!203.0.113.0/24"')
    assert not policy("*", "!*", always=[API]).check_name("127.0.0.1", 8000).allowed  # even the orchestrator's own


def test_a_deny_entry_with_a_port_denies_that_port_only():
    p = policy("github.com", "!github.com:22")
    assert not p.check_name("github.com", 22).allowed
    assert p.check_name("github.com", 443).allowed


@pytest.mark.parametrize(
    "address, kind",
    [
        ("10.0.0.5", "a private address"),
        ("172.16.3.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12::1", "a private address"),
        ("127.0.0.2", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("::ffff:10.0.0.5", "a private address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),  # NAT64 of 169.254.169.254
        ("2002:a00:5::1", "a private address"),  # 6to4 of 10.0.0.5
    ],
)
def test_an_address_that_is_not_public_is_refused_unless_listed(address, kind):
    p = policy("*", "*.example.com")
    assert p.check_address("api.example.com", 443, address) == Verdict(
        False, f"{kind} ({address}) that workers.sandbox_allow does not list"
    )


def test_a_wildcard_never_opens_a_private_address_a_name_resolves_to():
    # Given a public name allowed by a wildcard whose DNS answer is private (DNS rebinding)
    p = policy("*.example.com", "*")
    assert p.check_name("rebind.example.com", 443).allowed
    # Then the address is refused all the same
    assert not p.check_address("rebind.example.com", 443, "10.0.0.5").allowed


def test_an_entry_naming_the_host_or_its_address_literally_opens_a_private_address():
    p = policy("git.corp", "10.2.0.7", "10.9.0.0/16", "[::1]:8080", "db.corp:5432")
    assert p.check_address("git.corp", 443, "10.0.0.5") == Verdict(True, 'allowed by "git.corp"')
    assert p.check_address("10.2.0.7", 22, "10.2.0.7") == Verdict(True, 'allowed by "10.2.0.7"')
    assert p.check_address("other.example", 22, "10.9.3.4") == Verdict(True, 'allowed by "10.9.0.0/16"')
    assert p.check_address("::1", 8080, "::1").allowed
    assert not p.check_address("::1", 8081, "::1").allowed
    assert p.check_address("db.corp", 5432, "192.168.0.9").allowed
    assert not p.check_address("db.corp", 22, "192.168.0.9").allowed
    assert p.check_address("git.corp", 443, "::ffff:10.2.0.7").allowed  # a mapped form of a listed address


def test_the_orchestrators_endpoints_are_reached_at_their_port_only():
    model = Endpoint("LocalHost", 9100)
    p = policy(always=[API, model])
    assert p.check_name("127.0.0.1", 8000) == Verdict(True, "the orchestrator's API")
    assert p.check_address("127.0.0.1", 8000, "127.0.0.1") == Verdict(True, "the orchestrator's API")
    assert p.check_name("localhost", 9100) == Verdict(True, "an endpoint of the orchestrator's (LocalHost:9100)")
    assert p.check_address("localhost.", 9100, "::1").allowed
    assert p.check_name("127.0.0.1", 8001) == Verdict(False, "not in workers.sandbox_allow")
    assert not p.check_address("127.0.0.1", 8001, "127.0.0.1").allowed


def test_this_machines_own_addresses_are_refused_unless_listed():
    p = policy("*", "198.51.100.8", own=["198.51.100.7", "198.51.100.8", "2001:db8::7", "fe80::1%eth0"])
    assert p.check_address("me.example", 443, "198.51.100.7") == Verdict(
        False, "one of this machine's addresses (198.51.100.7) that workers.sandbox_allow does not list"
    )
    assert not p.check_address("me.example", 443, "2001:db8::7").allowed
    assert p.check_address("198.51.100.8", 443, "198.51.100.8").allowed
    assert p.check_address("me.example", 443, "198.51.100.9").allowed


def test_the_default_own_addresses_include_loopback():
    from orchestrator.network.policy import own_machine_addresses

    assert "127.0.0.1" in own_machine_addresses()


def test_an_invalid_host_name_asked_is_refused():
    p = policy("*")
    assert p.check_name("evil\r\nX-Header: 1", 80) == Verdict(False, "not a valid host name")
    assert not p.check_name("", 80).allowed
    assert not p.check_name("10.0.0", 80).allowed
    assert p.check_name("[2001:db8::1]", 443).allowed


def test_entries_lists_the_effective_policy_for_doctor():
    p = policy("api.anthropic.com", "github.com:443", "*.npmjs.org", "!evil.example.com", always=[API])
    assert p.entries() == [
        "allow api.anthropic.com (any port)",
        "allow github.com:443",
        "allow *.npmjs.org (subdomains of npmjs.org, not npmjs.org itself)",
        "deny evil.example.com (any port)",
        "always 127.0.0.1:8000 (the orchestrator's API)",
        "implicit: private, loopback, link-local and this machine's addresses: denied unless listed",
    ]
    assert policy().entries()[0] == "allow nothing (workers.sandbox_allow is empty)"
    assert policy("*").entries()[0] == "allow * (any public host)"


def test_an_invalid_endpoint_is_refused():
    with pytest.raises(ValueError, match="not a valid endpoint"):
        policy(always=[Endpoint("bad host", 80)])


@pytest.mark.parametrize(
    "url, endpoint",
    [
        ("http://127.0.0.1:8000/api/v1", Endpoint("127.0.0.1", 8000)),
        ("https://API.anthropic.com/v1/messages", Endpoint("api.anthropic.com", 443)),
        ("http://gateway.corp", Endpoint("gateway.corp", 80)),
        ("wss://x.example/ws", Endpoint("x.example", 443)),
        ("ws://x.example:81", Endpoint("x.example", 81)),
        ("http://[::1]:9000/", Endpoint("::1", 9000)),
        ("ftp://x.example", None),
        ("/just/a/path", None),
        ("http://x.example:99999", None),
        ("http://", None),
    ],
)
def test_endpoint_of_url(url, endpoint):
    assert endpoint_of_url(url) == endpoint
