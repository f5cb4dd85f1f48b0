"""relay.store.connection.safe_url: the one way a Redis URL reaches logs and output."""

from __future__ import annotations

import pytest

from relay.store.connection import safe_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://relay:s3cret@redis.internal:6380/2", "rediss://relay:***@redis.internal:6380/2"),
        # a username alone is not a secret, and an ACL problem is easier to see with it
        ("redis://relay@127.0.0.1/0", "redis://relay@127.0.0.1/0"),
        ("redis://relay:@127.0.0.1/0", "redis://relay:***@127.0.0.1/0"),
        # a password holding '@' or ':' (percent-encoded or not) is hidden whole
        ("redis://u:p%40ss:w@127.0.0.1/0", "redis://u:***@127.0.0.1/0"),
        ("redis://u:p@ss@127.0.0.1/0", "redis://u:***@127.0.0.1/0"),
        (
            "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
            "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
        ),
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
        ),
        ("unix:///run/redis/redis.sock?db=1", "unix:///run/redis/redis.sock?db=1"),
        ("unix:///run/redis/redis.sock?db=1&password=s3cret", "unix:///run/redis/redis.sock?db=1&password=***"),
        ("unix://:s3cret@/run/redis/redis.sock", "unix://:***@/run/redis/redis.sock"),
        ("redis://127.0.0.1/0?Password=s3cret&socket_timeout=5", "redis://127.0.0.1/0?Password=***&socket_timeout=5"),
        # the scheme forgotten (REDIS_URL=host:port, user:password@host): shown as typed, its password
        # hidden; urlsplit read "user" as the scheme and printed 'user://s3cret@host:6379'
        ("relay:s3cret@redis.internal:6379", "relay:***@redis.internal:6379"),
        (":s3cret@127.0.0.1:6379/0", ":***@127.0.0.1:6379/0"),
        ("127.0.0.1:6379", "127.0.0.1:6379"),
        ("notaurl", "notaurl"),
        # brackets urlsplit refuses (left open, no IPv6 address in them): the password hidden all the same
        ("redis://u:s3cret@[::1:6379/0", "redis://u:***@[::1:6379/0"),
        ("redis://:s3cret@[zz]:6379/0?password=s3cret", "redis://:***@[zz]:6379/0?password=***"),
        ("u:s3cret@[::1", "u:***@[::1"),
    ],
)
def test_safe_url_hides_every_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "s3cret" not in safe_url(url) and "ss:w" not in safe_url(url)
