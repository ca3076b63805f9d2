import hashlib
import secrets

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

KEY_PREFIX_LEN = 11  # "sk-" and the first 8 hex digits: enough to recognise, useless to attack.


class ActiveUserManager(UserManager):
    """Hides soft-deleted users; `User.all_objects` still sees them (audit rows keep pointing
    at them)."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class User(AbstractUser):
    class Role(models.TextChoices):
        ADMIN = "admin", _("Admin")
        USER = "user", _("User")

    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.USER)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    deleted_at = models.DateTimeField(_("deleted at"), null=True, blank=True, editable=False)

    objects = ActiveUserManager()
    all_objects = UserManager()

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        base_manager_name = "all_objects"

    def __str__(self):
        return self.username

    @property
    def is_admin(self) -> bool:
        """The one truth about admin rights: role admin, or a Django superuser."""
        return self.is_active and (self.role == self.Role.ADMIN or self.is_superuser)

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def save(self, *args, **kwargs):
        # Admins use the Django admin: promotion makes staff, and a demoted admin loses the
        # Django admin too. (Non-admin staff with chosen model permissions stay possible.)
        if self.role == self.Role.ADMIN:
            self.is_staff = True
        elif self.pk and not self.is_superuser and kwargs.get("update_fields") is None:
            was = User.all_objects.filter(pk=self.pk).values_list("role", flat=True).first()
            if was == self.Role.ADMIN:
                self.is_staff = False
        super().save(*args, **kwargs)

    def soft_delete(self):
        self.deleted_at = timezone.now()
        self.is_active = False
        self.save(update_fields=["deleted_at", "is_active"])


def hash_secret(secret: str) -> str:
    # The secrets are 128 random bits, so a fast hash is enough; no salt needed to stop guessing.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def issue(self, *, user: User, name: str, **fields) -> tuple["ApiKey", str]:
        """Create a key and return it with its secret, which is never stored and never shown
        again."""
        secret = "sk-" + secrets.token_hex(16)
        key = self.create(
            user=user,
            name=name,
            prefix=secret[:KEY_PREFIX_LEN],
            secret_hash=hash_secret(secret),
            **fields,
        )
        return key, secret

    def for_secret(self, secret: str) -> "ApiKey | None":
        return self.filter(secret_hash=hash_secret(secret)).first()


class ApiKey(models.Model):
    user = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="api_keys", verbose_name=_("user")
    )
    name = models.CharField(_("name"), max_length=200)
    prefix = models.CharField(_("prefix"), max_length=KEY_PREFIX_LEN, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["user_id", "name"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"
