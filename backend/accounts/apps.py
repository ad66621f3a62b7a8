from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "backend.accounts"
    label = "accounts"
    verbose_name = "Users, sites and roles"

    def ready(self) -> None:
        from backend.accounts import (  # noqa: F401  (receivers, the OpenAPI extension)
            lockout,
            middleware,
            schema,
        )
