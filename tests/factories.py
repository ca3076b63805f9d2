from datetime import UTC, datetime
from decimal import Decimal

import factory
from django.utils import timezone

from accounts.models import ApiKey, User
from monitoring.models import (
    MessageRequest,
    ProbeLog,
    Provider,
    ProviderEndpoint,
    RequestDetail,
)

TEST_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    role = User.Role.USER
    password = factory.PostGenerationMethodCall("set_password", TEST_PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """Keys are made through ApiKey.objects.issue, like real ones."""

    class Meta:
        model = ApiKey

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"key-{n}")

    @classmethod
    def _create(cls, model_class, *args, user, name, **kwargs):
        key, _secret = model_class.objects.issue(user=user, name=name, **kwargs)
        return key


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"provider-{n}")
    url = factory.LazyAttribute(lambda o: f"https://{o.name}.example")


class ProviderEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderEndpoint

    provider = factory.SubFactory(ProviderFactory)
    url = factory.Sequence(lambda n: f"https://endpoint-{n}.example/v1/messages")
    label = factory.Sequence(lambda n: f"endpoint {n}")


class ProbeLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProbeLog

    endpoint = factory.SubFactory(ProviderEndpointFactory)
    ok = True
    status_code = 200
    latency_ms = 45
    created_at = factory.LazyFunction(timezone.now)


class MessageRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MessageRequest

    created_at = factory.Sequence(lambda n: datetime(2026, 1, 29, 10, 30, tzinfo=UTC) + n * timezone.timedelta(seconds=1))
    user = factory.SubFactory(UserFactory)
    # The user's first key, made when they have none.
    key = factory.LazyAttribute(lambda o: o.user.api_keys.first() or ApiKeyFactory(user=o.user))
    provider = factory.SubFactory(ProviderFactory)
    model = "claude-sonnet-4-5-20250929"
    original_model = factory.SelfAttribute("model")
    endpoint = "/v1/messages"
    status_code = 200
    input_tokens = 1500
    output_tokens = 3200
    cache_creation_5m_input_tokens = 0
    cache_creation_1h_input_tokens = 0
    cache_read_input_tokens = 1200
    cost_usd = Decimal("0.0156")
    duration_ms = 2450
    session_id = factory.Sequence(lambda n: f"sess_{n:08d}")
    request_sequence = 1
    provider_chain = factory.LazyAttribute(
        lambda o: [
            {"id": o.provider.pk if o.provider else None, "reason": "initial_selection"},
            {"id": o.provider.pk if o.provider else None, "reason": "request_success", "statusCode": 200},
        ]
    )


class RequestDetailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RequestDetail

    request = factory.SubFactory(MessageRequestFactory)
    method = "POST"
    client_url = "https://hub.example/v1/messages"
    upstream_url = "https://api.anthropic.example/v1/messages"
    headers = factory.LazyFunction(lambda: {"content-type": "application/json"})
    body = factory.LazyFunction(lambda: {"model": "claude-sonnet-4-5-20250929", "messages": []})
    response_status = 200
