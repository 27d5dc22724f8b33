"""Settings from the environment."""

from planher.config import (
    Settings,
)


def test_settings_read_the_environment_with_documented_defaults():
    default = Settings.from_environ({})
    assert default.database_url == "sqlite:///planher.db"
    assert default.secret_keys == ()  # no key in the source: see signing_keys
    assert (default.access_token_ttl_s, default.refresh_token_ttl_s) == (900, 1_209_600)
    configured = Settings.from_environ(
        {
            "SECRET_KEYS": "new, old",
            "BCRYPT_ROUNDS": "4",
            "CORS_ORIGINS": "https://app.example",
            "ACCESS_TOKEN_TTL_S": "60",
        }
    )
    assert configured.secret_keys == ("new", "old")
    assert configured.bcrypt_rounds == 4 and configured.access_token_ttl_s == 60
    assert configured.cors_origins == ("https://app.example",)
