"""``python manage.py storage_rotate``: re-encrypt every stored file with the current key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from backend.storage.store import keyring, store_keys, store_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt stored files with the first key of ARTISCAN_STORAGE_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        keys = list(store_keys())
        changed = 0
        for key in tqdm(keys, desc="re-encrypting", unit="file", disable=None):
            changed += store_reencrypt(key)
        self.stdout.write(
            f"{changed} of {len(keys)} files re-encrypted with key {keyring().current_id!r}; "
            "older keys can now be removed from ARTISCAN_STORAGE_KEYS."
        )
