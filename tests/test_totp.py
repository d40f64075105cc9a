"""TOTP rules: RFC vectors, oathtool cross-check, strict parsing, the window, the URI."""
import subprocess
import urllib.parse

import pytest

from policy.rules import totp
from policy.rules.totp import TotpParams

RFC_SECRETS = {  # RFC 6238 appendix B: the seed is ASCII "1234567890" repeated to the hash size
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC_VECTORS = [  # (time, SHA1, SHA256, SHA512), 8 digits
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),  # after 2038
]


@pytest.mark.parametrize("when,sha1,sha256,sha512", RFC_VECTORS)
def test_rfc6238_vectors(when, sha1, sha256, sha512):
    for algorithm, expected in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        params = TotpParams(algorithm=algorithm, digits=8)
        assert totp.code_at_step(RFC_SECRETS[algorithm], when // 30, params) == expected


def test_rfc4226_appendix_d_hotp_values():
    expected = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]
    got = [totp.code_at_step(RFC_SECRETS["SHA1"], n, TotpParams()) for n in range(10)]
    assert got == expected


@pytest.mark.parametrize("algorithm,digits,period", [
    ("SHA1", 6, 30), ("SHA256", 8, 60), ("SHA512", 7, 30), ("SHA1", 6, 15)])
def test_codes_match_oathtool(algorithm, digits, period):
    secret = totp.new_secret()
    params = TotpParams(algorithm=algorithm, digits=digits, period=period)
    for when in (0, 1_700_000_000, 4_102_444_800):  # 1970, 2023, 2100
        out = subprocess.run(
            ["oathtool", "--totp=" + algorithm.lower(), "-b", f"--digits={digits}",
             f"--time-step-size={period}s", f"--now=@{when}", totp.to_base32(secret)],
            capture_output=True, text=True, check=True).stdout.strip()
        assert totp.code_at_step(secret, when // period, params) == out


def test_new_secret_is_160_random_bits():
    secrets_ = {totp.new_secret() for _ in range(50)}
    assert len(secrets_) == 50
    assert all(len(s) == 20 for s in secrets_)
    assert len(totp.to_base32(next(iter(secrets_)))) == 32


@pytest.mark.parametrize("text,expected", [
    ("123456", "123456"), ("123 456", "123456"), (" 123456 ", "123456"),
    ("", None), ("12345", None), ("1234567", None), ("12345a", None), ("abcdef", None),
    ("123\x00456", None), ("12345\x00", None), ("１２３４５６", None), ("١٢٣٤٥٦", None),
    ("1" * 10_000, None), ("+12345", None), ("-12345", None), ("123456\n7", None),
])
def test_parse_code_is_strict(text, expected):
    assert totp.parse_code(text, 6) == expected


def test_window_accepts_one_step_either_side_and_no_more():
    secret, params = totp.new_secret(), TotpParams(window=1)
    now = 1_800_000_015.0
    step = int(now // 30)
    for offset, accepted in ((-2, False), (-1, True), (0, True), (1, True), (2, False)):
        code = totp.code_at_step(secret, step + offset, params)
        found = totp.matching_step(secret, code, params, now)
        assert (found == step + offset) is accepted, offset
    strict = TotpParams(window=0)
    assert totp.matching_step(secret, totp.code_at_step(secret, step - 1, strict), strict, now) is None


def test_provisioning_uri_key_uri_format():
    secret = RFC_SECRETS["SHA1"]
    uri = totp.provisioning_uri(secret, "alice", "Example University", TotpParams())
    parsed = urllib.parse.urlparse(uri)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(parsed.path) == "/Example University:alice"
    assert urllib.parse.parse_qs(parsed.query) == {
        "secret": ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"], "issuer": ["Example University"]}
    other = totp.provisioning_uri(secret, "bob", "Uni", TotpParams("SHA256", 8, 60))
    assert urllib.parse.parse_qs(urllib.parse.urlparse(other).query) == {
        "secret": ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"], "issuer": ["Uni"],
        "algorithm": ["SHA256"], "digits": ["8"], "period": ["60"]}


def test_base32_round_trip_and_errors():
    secret = totp.new_secret()
    typed = totp.grouped(totp.to_base32(secret).lower())
    assert totp.from_base32(typed) == secret
    for bad, problem in (("", "must be 1 to 1024 base32 characters"),
                         ("A" * 2000, "must be 1 to 1024 base32 characters"),
                         ("not base32!", "is not valid base32"),
                         ("AAAA", "must be at least 128 bits")):
        with pytest.raises(ValueError, match=problem):
            totp.from_base32(bad)
    assert totp.grouped("ABCDEFGHIJ") == "ABCD EFGH IJ"
