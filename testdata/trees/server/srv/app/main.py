"""WSGI entry point for the HR application."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
app = get_wsgi_application()
