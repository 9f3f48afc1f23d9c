"""`manage.py bootstrap_admin`: create the first admin once and print its password once."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first administrator if no user exists yet, printing the generated password once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("Users exist already; log in with your account.")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        user.groups.add(Group.objects.get(name="admin"))
        self.stdout.write(self.style.SUCCESS(f"Created administrator '{username}' with password: {password}"))
        self.stdout.write("This password is shown only once; change it after logging in.")
