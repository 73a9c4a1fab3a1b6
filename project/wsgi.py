import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from project.chunked import ChunkedBodies

application = ChunkedBodies(get_wsgi_application())
