"""The API's memory of verified keys: valid keys looked up once per lapse, others always."""

import time
from datetime import timedelta

from api.key_cache import VerifiedKeys
from shared.api_keys import Grant
from shared.models import utcnow


class Lookups:
    def __init__(self, grants):
        self.grants, self.calls = grants, []

    def __call__(self, key):
        self.calls.append(key)
        return self.grants.get(key)


def test_a_valid_key_is_looked_up_once_and_an_unknown_one_every_time():
    look_up = Lookups({"good": Grant("acme", None)})
    keys = VerifiedKeys(ttl_s=60)
    for _ in range(3):
        assert keys.grant_of("good", look_up) == Grant("acme", None)
        assert keys.grant_of("bad", look_up) is None
    assert look_up.calls == ["good", "bad", "bad", "bad"]


def test_a_remembered_grant_past_its_expiry_is_refused_without_a_lookup():
    look_up = Lookups({"k": Grant("acme", utcnow() + timedelta(seconds=0.2))})
    keys = VerifiedKeys(ttl_s=60)
    assert keys.grant_of("k", look_up) is not None
    time.sleep(0.3)
    assert keys.grant_of("k", look_up) is None
    assert look_up.calls == ["k"]


def test_without_a_lapse_every_request_looks_up_and_forget_all_clears():
    look_up = Lookups({"good": Grant("acme", None)})
    uncached = VerifiedKeys(ttl_s=0)
    uncached.grant_of("good", look_up)
    uncached.grant_of("good", look_up)
    assert look_up.calls == ["good", "good"]
    cached = VerifiedKeys(ttl_s=60)
    cached.grant_of("good", look_up)
    cached.forget_all()
    cached.grant_of("good", look_up)
    assert look_up.calls == ["good", "good", "good", "good"]
