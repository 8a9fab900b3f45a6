"""Digest authentication (RFC 2617, RFC 7616, RFC 8760) for SIP."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.digest import (
    HA1,
    AuthResult,
    Challenge,
    Credentials,
    DigestAuthenticator,
    DigestError,
    answer_challenge,
    choose_challenge,
    compute_ha1,
    compute_response,
    find_credentials,
)
from gateway.sip.errors import SipError

REALM = "ccgw.test"
RURI = "sip:ccgw.test"
SECRET = b"shared-secret-of-the-site"
T0 = 1_700_000_000.0


def make_auth(**kw: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, **kw)  # type: ignore[arg-type]


def answer(
    ch: Challenge, *, password: str = "pw", nc: int = 1, uri: str = RURI, user: str = "1001"
) -> Credentials:
    return answer_challenge(ch, "REGISTER", uri, user, password, cnonce="c0ffee", nc=nc)


# --------------------------------------------------------------------------- RFC test vectors


def test_rfc2617_section_3_5_example() -> None:
    ch = Challenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert ch.algorithm is None
    assert ch.qop_options == ("auth", "auth-int")
    creds = answer_challenge(
        ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b", nc=1
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_example(alg: str, expected: str) -> None:
    ch = Challenge.parse(RFC7616_CHALLENGE.format(alg=alg))
    creds = answer_challenge(
        ch,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert creds.response == expected
    assert creds.algorithm == alg
    # and the Authorization value of the RFC parses back to the same response
    again = Credentials.parse(str(creds))
    assert again == creds


def test_rfc2069_no_qop() -> None:
    # draft-smith-sipping-auth-examples §3.1: no algorithm, no qop.
    ch = Challenge.parse(
        'Digest realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = answer_challenge(ch, "INVITE", "sip:bob@biloxi.com", "bob", "zanzibar")
    assert creds.qop is None and creds.cnonce is None and creds.nc is None
    assert creds.response == "bf57e4e0d0bffc0fbaedce64d59add5e"


def test_sess_and_auth_int_computation_are_consistent() -> None:
    ha1 = compute_ha1("MD5", "u", "r", "p")
    a = compute_response(
        algorithm="MD5-sess", ha1=ha1, nonce="n", method="INVITE", uri="sip:x", qop="auth",
        cnonce="c", nc="00000001",
    )  # fmt: skip
    b = compute_response(
        algorithm="MD5", ha1=hashlib.md5(f"{ha1}:n:c".encode()).hexdigest(),
        nonce="n", method="INVITE", uri="sip:x", qop="auth", cnonce="c", nc="00000001",
    )  # fmt: skip
    assert a == b
    with_body = compute_response(
        algorithm="MD5", ha1=ha1, nonce="n", method="INVITE", uri="sip:x", qop="auth-int",
        cnonce="c", nc="00000001", body=b"v=0\r\n",
    )  # fmt: skip
    assert with_body != compute_response(
        algorithm="MD5", ha1=ha1, nonce="n", method="INVITE", uri="sip:x", qop="auth-int",
        cnonce="c", nc="00000001", body=b"",
    )  # fmt: skip


# --------------------------------------------------------------------------- parsing


def test_challenge_round_trip() -> None:
    ch = Challenge('a "quoted" realm, with comma', "n\\once", "SHA-256", "auth", "op", True)
    text = str(ch)
    assert text.startswith("Digest ")
    assert 'qop="auth"' in text and "algorithm=SHA-256" in text and "stale=TRUE" in text
    assert Challenge.parse(text) == ch


def test_credentials_any_order_escapes_and_tight_commas() -> None:
    # SIPp writes no space after commas; values may hold escaped quotes and commas.
    text = (
        'digest nc=0000000a,qop="auth",response="ABCDEF0123",uri="sip:x@y",'
        'cnonce="c\\"n,o",realm="r, \\"s\\"",nonce="n",username="Bob \\\\ Co",algorithm=md5'
    )
    c = Credentials.parse(text)
    assert c.username == "Bob \\ Co"
    assert c.realm == 'r, "s"'
    assert c.cnonce == 'c"n,o'
    assert c.nc == "0000000a" and c.nonce_count == 10
    assert c.qop == "auth"
    assert c.algorithm == "MD5"
    assert c.response == "abcdef0123"
    assert Credentials.parse(str(c)) == c


def test_libre_authorization_header() -> None:
    # As libre's sip_auth_encode() writes it (lower-case algorithm copied from a bare challenge).
    c = Credentials.parse(
        'Digest username="1001", realm="ccgw.test", nonce="abc", uri="sip:ccgw.test", '
        'response="0123456789abcdef0123456789abcdef", cnonce="00000000deadbeef", qop=auth, '
        "nc=00000001, algorithm=md5"
    )
    assert (c.username, c.qop, c.nc, c.algorithm) == ("1001", "auth", "00000001", "MD5")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Basic dXNlcjpwYXNz",
        'Digest realm="r", nonce="n", uri="u", response="00"',  # no username
        'Digest username="u", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="u", realm="r", nonce="n", response="00"',  # no uri
        'Digest username="u", realm="r", nonce="n", uri="u", response="00", qop=auth',  # no nc
        'Digest username="u", realm="r", nonce="n", uri="u", response="00", qop=auth, '
        'cnonce="c", nc=1',  # nc not 8 hex
        'Digest username="u", realm="r", nonce="n", uri="u", response="zz"',  # not hex
        'Digest username="u, realm="r"',  # unterminated
        'Digest username="u" realm="r"',  # missing comma
        'Digest username="u", username="v", realm="r", nonce="n", uri="u", response="00"',
        "Digest username",
        'Digest =x, realm="r"',
    ],
)
def test_bad_credentials_are_400(text: str) -> None:
    with pytest.raises(SipError) as exc:
        Credentials.parse(text)
    assert exc.value.status == 400
    assert isinstance(exc.value, DigestError)


def test_bad_challenge_is_400() -> None:
    with pytest.raises(DigestError):
        Challenge.parse('Digest nonce="n"')


_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=30)
_tokens = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)
_hex = st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)


@given(
    username=_texts,
    realm=_texts,
    nonce=_texts,
    uri=_texts,
    response=_hex,
    cnonce=st.none() | _texts,
    nc=st.integers(min_value=1, max_value=2**32 - 1),
    opaque=st.none() | _texts,
    algorithm=st.none() | st.sampled_from(["MD5", "SHA-256", "SHA-256-sess"]),
)
def test_credentials_round_trip_property(
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    cnonce: str | None,
    nc: int,
    opaque: str | None,
    algorithm: str | None,
) -> None:
    qop = None if cnonce is None else "auth"
    c = Credentials(
        username, realm, nonce, uri, response, algorithm, cnonce,
        None if cnonce is None else f"{nc:08x}", qop, opaque,
    )  # fmt: skip
    assert Credentials.parse(str(c)) == c


@given(
    realm=_texts,
    nonce=_texts,
    algorithm=st.none() | st.sampled_from(["MD5", "SHA-256"]),
    qop=st.none() | st.sampled_from(["auth", "auth,auth-int"]),
    opaque=st.none() | _texts,
    stale=st.booleans(),
    domain=st.none() | _texts,
)
def test_challenge_round_trip_property(
    realm: str,
    nonce: str,
    algorithm: str | None,
    qop: str | None,
    opaque: str | None,
    stale: bool,
    domain: str | None,
) -> None:
    ch = Challenge(realm, nonce, algorithm, qop, opaque, stale, domain)
    assert Challenge.parse(str(ch)) == ch


@given(st.text(max_size=200))
def test_parsers_raise_only_sip_errors(text: str) -> None:
    for parse in (Credentials.parse, Challenge.parse):
        try:
            parse(text)
        except SipError as exc:
            assert exc.status == 400


@given(_tokens, _tokens)
def test_unquoted_token_values(nonce: str, opaque: str) -> None:
    ch = Challenge.parse(f"Digest realm=r,nonce={nonce} , opaque = {opaque}")
    assert (ch.realm, ch.nonce, ch.opaque) == ("r", nonce, opaque)


# --------------------------------------------------------------------------- server side


def test_challenges_sha256_first_and_stateless() -> None:
    auth = make_auth()
    chs = auth.challenges(T0)
    assert [c.algorithm for c in chs] == ["SHA-256", "MD5"]
    assert all(c.realm == REALM and c.qop == "auth" and not c.stale for c in chs)
    # any process holding the secret accepts the nonce
    other = make_auth()
    assert other.nonce_issued(chs[0].nonce) == T0
    assert make_auth().challenges(T0)[0].nonce != chs[0].nonce  # salted
    assert DigestAuthenticator(REALM, b"other").nonce_issued(chs[0].nonce) is None


@pytest.mark.parametrize("index", [0, 1])
def test_verify_ok_with_each_algorithm(index: int) -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[index]
    creds = Credentials.parse(str(answer(ch)))
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0 + 1) is AuthResult.OK


def test_verify_with_stored_ha1() -> None:
    auth = make_auth()
    stored = HA1.from_password("1001", REALM, "pw")
    for index in (0, 1):
        ch = auth.challenges(T0)[index]
        assert auth.verify(answer(ch), "REGISTER", RURI, stored, T0) is AuthResult.OK
    md5_only = HA1.from_password("1001", REALM, "pw", ["MD5"])
    sha = auth.challenges(T0)[0]
    assert auth.verify(answer(sha), "REGISTER", RURI, md5_only, T0) is AuthResult.FAILED


def test_wrong_password_fails() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    creds = answer(ch, password="wrong")
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.FAILED


def test_unknown_user_is_indistinguishable() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    wrong = auth.verify(answer(ch, password="x"), "REGISTER", RURI, "pw", T0)
    unknown = auth.verify(answer(ch, password="x", user="nobody"), "REGISTER", RURI, None, T0)
    assert wrong is unknown is AuthResult.FAILED
    # even when the nonce is stale, an unknown user gets the same answer as a wrong password
    late = T0 + 10_000
    wrong = auth.verify(answer(ch, password="x", nc=2), "REGISTER", RURI, "pw", late)
    unknown = auth.verify(
        answer(ch, password="x", user="nobody", nc=2), "REGISTER", RURI, None, late
    )
    assert wrong is unknown is AuthResult.FAILED


def test_stale_nonce_with_right_digest() -> None:
    auth = make_auth(nonce_lifetime=300.0)
    ch = auth.challenges(T0)[1]
    assert auth.verify(answer(ch), "REGISTER", RURI, "pw", T0 + 300.0) is AuthResult.OK
    assert auth.verify(answer(ch, nc=2), "REGISTER", RURI, "pw", T0 + 300.5) is AuthResult.STALE
    again = auth.challenges(T0 + 301, stale=True)
    assert all(c.stale for c in again)
    assert "stale=TRUE" in str(again[0])
    assert auth.verify(answer(again[1]), "REGISTER", RURI, "pw", T0 + 302) is AuthResult.OK


def test_nonce_from_the_future_is_stale() -> None:
    auth = make_auth()
    ch = auth.challenges(T0 + 60)[0]
    assert auth.verify(answer(ch), "REGISTER", RURI, "pw", T0) is AuthResult.STALE


def test_replay_and_nonce_count() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    assert auth.verify(answer(ch, nc=1), "REGISTER", RURI, "pw", T0) is AuthResult.OK
    assert auth.verify(answer(ch, nc=1), "REGISTER", RURI, "pw", T0 + 1) is AuthResult.FAILED
    assert auth.verify(answer(ch, nc=3), "REGISTER", RURI, "pw", T0 + 2) is AuthResult.OK
    assert auth.verify(answer(ch, nc=2), "REGISTER", RURI, "pw", T0 + 3) is AuthResult.FAILED
    assert auth.verify(answer(ch, nc=4), "REGISTER", RURI, "pw", T0 + 4) is AuthResult.OK


def test_failed_attempt_does_not_burn_the_nonce_count() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    assert auth.verify(answer(ch, nc=9, password="x"), "REGISTER", RURI, "pw", T0) is (
        AuthResult.FAILED
    )
    assert auth.verify(answer(ch, nc=1), "REGISTER", RURI, "pw", T0) is AuthResult.OK


def test_nonce_table_is_bounded_and_never_allows_a_replay() -> None:
    auth = make_auth(max_tracked_nonces=10)
    first = auth.challenges(T0)[0]
    assert auth.verify(answer(first), "REGISTER", RURI, "pw", T0) is AuthResult.OK
    for i in range(20):
        ch = auth.challenges(T0 + 1 + i)[0]
        assert auth.verify(answer(ch), "REGISTER", RURI, "pw", T0 + 1 + i) is AuthResult.OK
    assert auth.tracked_nonces == 10
    # the first nonce's count was forgotten: its replay is not accepted
    assert auth.verify(answer(first), "REGISTER", RURI, "pw", T0 + 30) is AuthResult.STALE
    # and counts expire with the nonces
    auth.verify(answer(auth.challenges(T0 + 1000)[0]), "REGISTER", RURI, "pw", T0 + 1000)
    assert auth.tracked_nonces == 1


def test_uri_must_match_request_uri() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    creds = answer(ch, uri="sip:elsewhere.test")
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.FAILED
    # RFC 3261 §19.1.4 equivalence is enough (case of the host)
    creds = answer(ch, uri="sip:CCGW.test")
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.OK


def test_uri_check_can_be_turned_off_for_sipp() -> None:
    # SIPp 3.6 digests "sip:<remote host:port>" whatever the Request-URI is.
    auth = make_auth(check_uri=False)
    ch = auth.challenges(T0)[0]
    creds = answer(ch, uri="sip:127.0.0.1:5060")
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.OK


def test_method_is_part_of_the_digest() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    assert auth.verify(answer(ch), "INVITE", RURI, "pw", T0) is AuthResult.FAILED


def test_tampered_nonce_fails() -> None:
    auth = make_auth()
    ch = auth.challenges(T0)[0]
    nonce = ch.nonce
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    forged = Challenge(REALM, flipped, "SHA-256", "auth")
    # even with the right password, a nonce we did not issue is refused
    assert auth.verify(answer(forged), "REGISTER", RURI, "pw", T0) is AuthResult.FAILED
    for junk in ("", "abc", "!" * 43, nonce + "A"):
        forged = Challenge(REALM, junk, "SHA-256", "auth")
        assert auth.verify(answer(forged), "REGISTER", RURI, "pw", T0) is AuthResult.FAILED


def test_other_realm_and_algorithm_fail() -> None:
    auth = make_auth(algorithms=("MD5",))
    ch = auth.challenges(T0)[0]
    other_realm = Challenge("evil.test", ch.nonce, "MD5", "auth")
    assert auth.verify(answer(other_realm), "REGISTER", RURI, "pw", T0) is AuthResult.FAILED
    sha = Challenge(REALM, ch.nonce, "SHA-256", "auth")
    assert auth.verify(answer(sha), "REGISTER", RURI, "pw", T0) is AuthResult.FAILED


def test_no_qop_only_when_allowed() -> None:
    strict = make_auth()
    lenient = make_auth(allow_no_qop=True)
    ch = strict.challenges(T0)[1]
    bare = Challenge(REALM, ch.nonce, "MD5", None)
    creds = answer(bare)
    assert creds.qop is None
    assert strict.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.FAILED
    assert lenient.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.OK


def test_opaque_checked_when_configured() -> None:
    auth = make_auth(opaque="xyz")
    ch = auth.challenges(T0)[0]
    assert ch.opaque == "xyz"
    assert auth.verify(answer(ch), "REGISTER", RURI, "pw", T0) is AuthResult.OK
    wrong = Challenge(REALM, auth.challenges(T0)[0].nonce, "SHA-256", "auth", "abc")
    assert auth.verify(answer(wrong), "REGISTER", RURI, "pw", T0) is AuthResult.FAILED


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"")
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, SECRET, algorithms=("MD5-sess",))
    assert DigestAuthenticator(REALM, SECRET, algorithms=("md5",)).algorithms == ("MD5",)


# --------------------------------------------------------------------------- interop shapes


def test_libre_answers_every_challenge_and_we_pick_one() -> None:
    auth = make_auth()
    chs = auth.challenges(T0)
    values = ['Digest username="x", realm="other", nonce="n", uri="u", response="00"']
    values += [str(answer(ch)) for ch in reversed(chs)]
    values.append("Basic Zm9vOmJhcg==")
    creds = find_credentials(values, REALM)
    assert creds is not None and creds.algorithm == "SHA-256"
    assert auth.verify(creds, "REGISTER", RURI, "pw", T0) is AuthResult.OK
    assert find_credentials(values[:1], REALM) is None


def test_libre_md5_only_challenge_shape() -> None:
    # libre ≤ 1.x answers only MD5 and copies the challenge's algorithm; with a challenge
    # without algorithm it omits it. Both verify.
    auth = make_auth(algorithms=("MD5",))
    ch = auth.challenges(T0)[0]
    text = str(ch)
    assert text.startswith('Digest realm="ccgw.test", nonce="') and 'qop="auth"' in text
    ha1 = compute_ha1("MD5", "1001", REALM, "pw")
    resp = compute_response(
        algorithm="MD5", ha1=ha1, nonce=ch.nonce, method="REGISTER", uri=RURI, qop="auth",
        cnonce="00000000deadbeef", nc="00000001",
    )  # fmt: skip
    value = (
        f'Digest username="1001", realm="{REALM}", nonce="{ch.nonce}", uri="{RURI}", '
        f'response="{resp}", cnonce="00000000deadbeef", qop=auth, nc=00000001'
    )
    assert auth.verify(Credentials.parse(value), "REGISTER", RURI, "pw", T0) is AuthResult.OK


def test_choose_challenge_prefers_strongest_supported() -> None:
    chs = [
        Challenge("r", "n1", "MD5"),
        Challenge("r", "n2", "SHA-256"),
        Challenge("r", "n3", "AKAv1-MD5"),
        Challenge("r", "n4", "SHA-256-sess", None),  # -sess needs a qop
    ]
    chosen = choose_challenge(chs)
    assert chosen is not None and chosen.nonce == "n2"
    assert choose_challenge([Challenge("r", "n", "AKAv1-MD5")]) is None


def test_answer_challenge_rejects_unsupported() -> None:
    with pytest.raises(DigestError):
        answer_challenge(Challenge("r", "n", "AKAv1-MD5"), "INVITE", "sip:x", "u", "p")
    with pytest.raises(DigestError):
        answer_challenge(Challenge("r", "n", "MD5", "auth-conf"), "INVITE", "sip:x", "u", "p")


def test_answer_challenge_auth_int_uses_body() -> None:
    ch = Challenge("r", "n", "MD5", "auth-int")
    a = answer_challenge(ch, "INVITE", "sip:x", "u", "p", cnonce="c", body=b"v=0\r\n")
    b = answer_challenge(ch, "INVITE", "sip:x", "u", "p", cnonce="c", body=b"")
    assert a.qop == "auth-int" and a.response != b.response
