"""istio-iptables command-line and environment parsing (meshlab.istio.flags)."""

from __future__ import annotations

from dataclasses import fields
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.capture import generate
from meshlab.istio.flags import (
    DEFAULT_ISTIO_INIT_ARGS,
    ENV_ONLY,
    FLAGS,
    CaptureConfig,
    CaptureFlagError,
    split_dns_servers,
)

parse = CaptureConfig.from_args


def test_no_flags_is_istios_base_config() -> None:
    config = parse([])
    assert config == CaptureConfig()
    assert config.proxy_uid == (1337,) and config.proxy_gid == (1337,)
    assert config.inbound_ports_include == () and config.outbound_ip_ranges_include == ()


def test_default_istio_init_args() -> None:
    config = parse(DEFAULT_ISTIO_INIT_ARGS)
    assert config.inbound_ports_include == "*"
    assert config.outbound_ip_ranges_include == "*"
    assert config.outbound_ip_ranges_exclude == ()
    assert config.inbound_ports_exclude == (15090, 15021, 15020)
    assert config.interception_mode == "REDIRECT" and not config.is_tproxy


def test_leading_istio_iptables_word_and_logging_flags_are_ignored() -> None:
    argv = ["istio-iptables", *DEFAULT_ISTIO_INIT_ARGS, "--log_output_level=default:info",
            "--log_as_json"]  # fmt: skip
    assert parse(argv) == parse(DEFAULT_ISTIO_INIT_ARGS)
    assert parse(["--log_output_level", "default:debug", "-b", "80"]).inbound_ports_include == (80,)


# Every flag, by its short name and its long name, in both value forms.
VALUES = {
    "proxy_port": ("15111", 15111),
    "inbound_capture_port": ("15116", 15116),
    "inbound_tunnel_port": ("15118", 15118),
    "proxy_uid": ("3,4", (3, 4)),
    "proxy_gid": ("1,2", (1, 2)),
    "interception_mode": ("TPROXY", "TPROXY"),
    "tproxy_mark": ("77", 77),
    "tproxy_route_table": ("100", 100),
    "inbound_ports_include": ("9080,8080", (9080, 8080)),
    "inbound_ports_exclude": ("15090,15021", (15090, 15021)),
    "exclude_interfaces": ("eth9,veth1", ("eth9", "veth1")),
    "outbound_ip_ranges_include": (
        "10.0.0.0/8,fd00::/8", (IPv4Interface("10.0.0.0/8"), IPv6Interface("fd00::/8"))),
    "outbound_ip_ranges_exclude": ("169.254.169.254/32", (IPv4Interface("169.254.169.254/32"),)),
    "outbound_ports_include": ("3306", (3306,)),
    "outbound_ports_exclude": ("15020,22", (15020, 22)),
    "kube_virt_interfaces": ("k6t-eth0", ("k6t-eth0",)),
    "iptables_probe_port": ("16000", 16000),
    "probe_timeout": ("1m30s", "1m30s"),
    "network_namespace": ("/var/run/netns/x", "/var/run/netns/x"),
    "force_iptables_binary": ("iptables-legacy", "iptables-legacy"),
}  # fmt: skip


@pytest.mark.parametrize("spec", [s for s in FLAGS if not s.is_bool], ids=lambda s: s.long)
def test_each_value_flag_short_and_long(spec) -> None:  # type: ignore[no-untyped-def]
    text, expected = VALUES[spec.field]
    forms = [[f"--{spec.long}", text], [f"--{spec.long}={text}"]]
    if spec.short:
        forms += [[f"-{spec.short}", text], [f"-{spec.short}{text}"], [f"-{spec.short}={text}"]]
    for argv in forms:
        assert getattr(parse(argv), spec.field) == expected, argv


@pytest.mark.parametrize("spec", [s for s in FLAGS if s.is_bool], ids=lambda s: s.long)
def test_each_boolean_flag(spec) -> None:  # type: ignore[no-untyped-def]
    assert getattr(parse([f"--{spec.long}"]), spec.field) is True
    assert getattr(parse([f"--{spec.long}=true"]), spec.field) is True
    assert getattr(parse([f"--{spec.long}=0"]), spec.field) is False
    if spec.short:
        assert getattr(parse([f"-{spec.short}"]), spec.field) is True
    # the environment turns it on, an explicit flag turns it off again
    env = {spec.env[0]: "true"}
    assert getattr(parse([], env), spec.field) is True
    assert getattr(parse([f"--{spec.long}=false"], env), spec.field) is False


def test_every_field_is_covered_by_the_flag_tests() -> None:
    covered = set(VALUES) | {s.field for s in FLAGS if s.is_bool} | {k.field for k in ENV_ONLY}
    covered |= {"enable_ipv6", "dns_servers_v4", "dns_servers_v6"}
    assert {f.name for f in fields(CaptureConfig)} == covered


def test_flag_table_matches_the_facts() -> None:
    shorts = {s.short for s in FLAGS if s.short}
    assert shorts == set("pzeugmtrbdcixqokn")
    assert len(FLAGS) == 32
    by_long = {s.long: s for s in FLAGS}
    assert by_long["envoy-port"].env == ()
    assert by_long["istio-inbound-ports"].env == ("ISTIO_INBOUND_PORTS",)
    assert by_long["redirect-dns"].env == ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE")


@pytest.mark.parametrize("spec", [s for s in FLAGS if not s.is_bool and s.env],
                         ids=lambda s: s.long)  # fmt: skip
def test_env_fallback_and_flag_override(spec) -> None:  # type: ignore[no-untyped-def]
    text, expected = VALUES[spec.field]
    assert getattr(parse([], {spec.env[0]: text}), spec.field) == expected
    # an explicit flag wins over the environment
    other = parse([f"--{spec.long}", text], {spec.env[0]: "garbage"})
    assert getattr(other, spec.field) == expected


def test_envoy_port_has_no_environment_variable() -> None:
    assert parse([], {"ENVOY_PORT": "1"}).proxy_port == 15001


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"ISTIO_META_DNS_CAPTURE": "true"}, "redirect_dns"),
        ({"INVALID_DROP": "true"}, "drop_invalid"),
        ({"ISTIO_DUAL_STACK": "true"}, "dual_stack"),
    ],
)
def test_legacy_env_vars(env: dict[str, str], field: str) -> None:
    assert getattr(parse([], env), field) is True


def test_primary_env_var_beats_legacy_one() -> None:
    config = parse([], {"REDIRECT_DNS": "false", "ISTIO_META_DNS_CAPTURE": "true"})
    assert config.redirect_dns is False


def test_empty_env_value_counts_as_unset() -> None:
    assert parse([], {"ISTIO_INBOUND_PORTS": ""}).inbound_ports_include == ()


def test_env_only_knobs() -> None:
    config = parse([], {
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8",
        "ISTIO_OUTBOUND_OWNER_GROUPS": "java,202",
        "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888",
    })  # fmt: skip
    assert str(config.ipv4_loopback_cidr) == "127.0.0.1/8"
    assert config.owner_groups_include == ("java", "202")
    assert config.owner_groups_exclude == ("888",)


def test_envoy_user_chooses_the_default_uid() -> None:
    assert parse([], {"ENVOY_USER": "root"}).proxy_uid == (0,)
    assert parse([], {"ENVOY_USER": "root"}).proxy_gid == (0,)
    assert parse([], {"ENVOY_USER": "nosuchuser"}).proxy_uid == (1337,)
    assert parse(["-u", "5"], {"ENVOY_USER": "root"}).proxy_uid == (5,)


def test_gid_defaults_to_uid_list() -> None:
    assert parse(["-u", "3,4"]).proxy_gid == (3, 4)
    assert parse(["-u", "3,4", "-g", "7"]).proxy_gid == (7,)


def test_lists_drop_empty_items_like_istio_split() -> None:
    assert parse(["-d", "6000,7000,"]).inbound_ports_exclude == (6000, 7000)
    assert parse(["-x", ""]).outbound_ip_ranges_exclude == ()


def test_last_flag_wins() -> None:
    assert parse(["-p", "1", "--envoy-port", "2"]).proxy_port == 2


def test_grouped_short_booleans() -> None:
    config = parse(["-nb", "*"])
    assert config.dry_run and config.inbound_ports_include == "*"


def test_cidrs_keep_host_bits_and_family() -> None:
    config = parse(["-i", "10.0.0.1/8,2001:DB8::/32"])
    assert [str(c) for c in config.outbound_ip_ranges_include] == ["10.0.0.1/8", "2001:db8::/32"]


def test_ipv6_and_dns_are_keyword_inputs() -> None:
    config = parse(["--redirect-dns"], enable_ipv6=True, dns_servers_v4=["10.96.0.10"],
                   dns_servers_v6=["fd00::a"])  # fmt: skip
    assert config.enable_ipv6 and config.dns_servers_v4 == ("10.96.0.10",)
    assert config.dns_servers_v6 == ("fd00::a",) and config.dns_capture_active


def test_dns_without_servers_is_silently_off() -> None:
    assert not parse(["--redirect-dns"]).dns_capture_active
    assert parse(["--redirect-dns", "--capture-all-dns"]).dns_capture_active


def test_split_dns_servers() -> None:
    assert split_dns_servers(["10.0.0.10", "::1", "8.8.8.8"]) == (
        ("10.0.0.10", "8.8.8.8"),
        ("::1",),
    )
    with pytest.raises(CaptureFlagError, match="not an IP address"):
        split_dns_servers(["resolver"])


def test_string_argv_is_split_like_a_shell() -> None:
    words = ["istio-iptables", "-p", "15001", "-i", "*", "-b", "80", "-x", ""]
    assert parse("istio-iptables -p 15001 -i '*' -b 80 -x \"\"") == parse(words)
    with pytest.raises(CaptureFlagError, match=r"close every quote"):
        parse("-i '*")


@pytest.mark.parametrize("config_args", [
    DEFAULT_ISTIO_INIT_ARGS,
    ("-m", "TPROXY", "-b", "80,81", "-i", "10.0.0.0/8,fd00::/8", "-x", "10.1.0.0/16",
     "-o", "22", "-q", "3306", "-k", "eth1", "-c", "eth2", "--redirect-dns", "--drop-invalid",
     "-t", "9", "-r", "90", "--probe-timeout", "10s", "-e", "15009"),
])  # fmt: skip
def test_to_args_round_trip(config_args: tuple[str, ...]) -> None:
    env = {
        "ISTIO_OUTBOUND_OWNER_GROUPS": "java",
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8",
    }
    config = parse(config_args, env, enable_ipv6=True, dns_servers_v4=["10.0.0.10"])
    again = parse(config.to_args(), config.to_env(), enable_ipv6=True,
                  dns_servers_v4=["10.0.0.10"])  # fmt: skip
    assert again == config
    assert generate(again).restore_v4 == generate(config).restore_v4


# ---- rejections ----


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["-x", "*"], {}, r"'\*' is rejected by istio-iptables"),
        ([], {"ISTIO_SERVICE_EXCLUDE_CIDR": "*"}, r"environment ISTIO_SERVICE_EXCLUDE_CIDR"),
        (["-p", "70000"], {}, r"port 70000 is out of range"),
        (["-z", "http"], {}, r"'http' is not a port number"),
        (["-b", "80,x"], {}, r"'x' is not a port number"),
        (["-b", "*,80"], {}, r"mixes '\*' with ports"),
        (["-d", "*"], {}, r"'\*' is not accepted here"),
        (["-o", "0"], {}, r"out of range"),
        (["-i", "10.0.0.0/33"], {}, r"is not a CIDR"),
        (["-i", "10.0.0.0"], {}, r"write an address and a prefix length, e.g. 10.0.0.0/32"),
        (["-x", "10.0.0.0/8,banana/8"], {}, r"'banana/8' is not a CIDR"),
        (["-u", "istio-proxy"], {}, r"numeric user or group id"),
        (["-r", "254"], {}, r"reserved by the kernel"),
        (["-c", "a/b"], {}, r"not a Linux interface name"),
        (["--probe-timeout", "5"], {}, r"not a Go duration"),
        (["--redirect-dns=maybe"], {}, r"not a boolean"),
        ([], {"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "10.0.0.1/8"}, r"IPv4 loopback CIDR"),
        ([], {"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/4"}, r"between /8 and /32"),
        ([], {"ISTIO_OUTBOUND_OWNER_GROUPS": ",".join(str(g) for g in range(65))}, r"at most 64"),
    ],
)
def test_rejections(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(CaptureFlagError, match=message):
        parse(argv, env)


def test_rejection_is_a_meshlab_error_that_names_the_flag() -> None:
    with pytest.raises(MeshlabError) as caught:
        parse(["-b", "80", "-p", "99999"])
    assert "flag -p (word 3)" in str(caught.value)
    assert caught.value.value == "99999"  # type: ignore[attr-defined]


def test_unknown_flag_suggests_the_closest() -> None:
    with pytest.raises(CaptureFlagError, match=r"unknown flag --istio-inbound-port; did you mean "
                                               r"--istio-inbound-ports\?"):  # fmt: skip
        parse(["--istio-inbound-port", "80"])
    with pytest.raises(CaptureFlagError, match=r"did you mean --redirect-dns\?"):
        parse(["--redirect-dsn"])
    with pytest.raises(CaptureFlagError, match=r"unknown shorthand flag -w; the one-letter flags"):
        parse(["-w", "1"])
    with pytest.raises(CaptureFlagError, match=r"long flags take two dashes: write --dry-run"):
        parse(["-dry-run"])


def test_missing_value() -> None:
    with pytest.raises(CaptureFlagError, match=r"flag -b needs a value"):
        parse(["-b"])
    with pytest.raises(CaptureFlagError, match=r"the next word '-b' is a flag"):
        parse(["-x", "-b", "*"])


def test_positional_words_are_rejected_with_a_hint() -> None:
    with pytest.raises(CaptureFlagError, match=r"--redirect-dns=false"):
        parse(["--redirect-dns", "false"])
    with pytest.raises(CaptureFlagError, match=r"unexpected argument 'extra'"):
        parse(["-b", "*", "extra"])


def test_dns_server_family_is_checked() -> None:
    with pytest.raises(CaptureFlagError, match=r"not an IPv4 address"):
        parse([], dns_servers_v4=["fd00::1"])
    with pytest.raises(CaptureFlagError, match=r"not an IP address"):
        parse([], dns_servers_v6=["x"])
