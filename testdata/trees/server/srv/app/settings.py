"""Django settings for the HR application (production)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

DEBUG = os.environ.get("DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "").split(",")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "hr",
        "USER": "hr_app",
        "PASSWORD": os.environ["DB_PASSWORD"],
        "HOST": "db.internal",
        "PORT": "5432",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

PASSWORD = os.environ["DB_PASSWORD"]
STATIC_ROOT = "/srv/app/static"
TIME_ZONE = "Europe/Berlin"
