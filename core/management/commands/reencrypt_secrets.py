"""`manage.py reencrypt_secrets`: rewrite every encrypted value with the first FIELD_ENCRYPTION_KEY.

Key rotation: put the new key first in FIELD_ENCRYPTION_KEY (`new,old`), run this command, then
drop the old key. Rows are updated in place without touching the audit log (values are unchanged).
"""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from core.fields import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt all secrets with the first key of FIELD_ENCRYPTION_KEY (after adding a new key)."

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
            if not names:
                continue
            with transaction.atomic():
                for row in model._base_manager.select_for_update().only("pk", *names):
                    model._base_manager.filter(pk=row.pk).update(**{name: getattr(row, name) for name in names})
                    total += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the secrets of {total} rows with the first key."))
