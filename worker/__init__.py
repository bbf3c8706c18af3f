"""The Celery worker: ``celery -A worker.celery_app worker`` (see ``worker.celery_app``)."""
