from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "backend.accounts"
    label = "accounts"
    verbose_name = "Users, sites and roles"

    def ready(self) -> None:
        from backend.accounts import lockout, schema  # noqa: F401  (receivers, OpenAPI extension)
