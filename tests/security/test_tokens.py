"""The signed tokens, tested directly."""

import pytest

from planher.security.tokens import InvalidToken, TokenSigner


def test_token_signer_keeps_purposes_apart_and_checks_the_payload():
    signer = TokenSigner(("key",), access_ttl_s=60, refresh_ttl_s=600)
    pair = signer.token_pair(7, "login-key", "jti")
    assert signer.load_access(pair["access_token"]) == {"uid": 7, "lid": "login-key"}
    assert signer.load_refresh(pair["refresh_token"])["jti"] == "jti"
    with pytest.raises(InvalidToken):
        signer.load_access(pair["refresh_token"])
    with pytest.raises(InvalidToken):
        signer.load_refresh(pair["access_token"])
    with pytest.raises(InvalidToken):
        TokenSigner(("other key",), 60, 600).load_access(pair["access_token"])
