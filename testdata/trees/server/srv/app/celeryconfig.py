"""Celery settings for the background workers."""

broker_url = "amqp://svc:{{AMQP_PASSWORD}}@mq.internal:5672/"
result_backend = "rpc://"
task_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Berlin"
worker_prefetch_multiplier = 1
