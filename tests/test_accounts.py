from datetime import timedelta

import pytest
from django.contrib.auth import authenticate
from django.utils import timezone

from accounts.models import ApiKey, hash_secret

from .factories import TEST_PASSWORD, UserFactory


@pytest.mark.django_db
def test_api_key_secret_is_shown_once_and_stored_hashed(alice):
    key, secret = ApiKey.objects.issue(user=alice, name="new")
    assert secret.startswith("sk-") and len(secret) == 3 + 32
    assert key.prefix == secret[:11]
    assert key.secret_hash == hash_secret(secret) != secret
    assert ApiKey.objects.for_secret(secret) == key
    assert ApiKey.objects.for_secret(secret + "x") is None


@pytest.mark.django_db
def test_admins_are_role_admin_or_superusers():
    assert UserFactory(username="r", role="admin").is_admin
    assert UserFactory(username="s", is_superuser=True).is_admin
    assert not UserFactory(username="u").is_admin
    promoted = UserFactory(username="r2", role="admin")
    assert promoted.is_staff  # the Django admin follows the role
    promoted.role = "user"
    promoted.save()
    assert not promoted.is_staff and not promoted.is_admin


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["expired", "deleted", "inactive"])
def test_expired_deleted_or_disabled_users_cannot_sign_in(change):
    user = UserFactory(username="carol")
    assert authenticate(username="carol", password=TEST_PASSWORD) == user
    if change == "expired":
        user.expires_at = timezone.now() - timedelta(minutes=1)
        user.save()
    elif change == "deleted":
        user.soft_delete()
    else:
        user.is_active = False
        user.save()
    assert authenticate(username="carol", password=TEST_PASSWORD) is None


@pytest.mark.django_db
def test_sign_in_through_the_form(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert client.get("/dashboard/logs/").status_code == 200
